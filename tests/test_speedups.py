"""The fast defaults: `train.bf16: auto`, lazy (row-sparse) embedding updates and their gradient clipping, cheap
CPU dropout masks, and that `mha-ft train` trains with them on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hf_mha import speedups
from hf_mha.errors import UserError
from hf_mha.recipe import recipe_from_dict
from hf_mha.speedups import (FastDropout, LazyEmbeddingAdamW, clip_grad_norm, fast_dropout, keep_mask,
                              lazy_embedding_optimizer)
from hf_mha.training import precision, slow_precision_warning, training_arguments

from conftest import mha_ft


@pytest.mark.parametrize("units, expected", [("AVX-512 BF16", {"bf16": True, "use_cpu": True}), (None, {})])
def test_bf16_auto_follows_the_cpu(monkeypatch, units, expected):
    monkeypatch.setattr(speedups, "cpu_bf16_units", lambda: units)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision(recipe_from_dict({})) == expected
    assert precision(recipe_from_dict({"train": {"bf16": "auto"}})) == expected
    assert precision(recipe_from_dict({"train": {"bf16": False}})) == {"bf16": False}
    assert precision(recipe_from_dict({"train": {"bf16": True}})) == {"bf16": True, "use_cpu": True}


@pytest.mark.parametrize("units, warned", [("AMX", False), (None, True)])
def test_forced_bf16_warns_on_a_cpu_without_bf16_units(monkeypatch, units, warned):
    monkeypatch.setattr(speedups, "cpu_bf16_units", lambda: units)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    forced = training_arguments(recipe_from_dict({"train": {"bf16": True}}), "loss")
    assert (slow_precision_warning(forced) is not None) == warned
    assert slow_precision_warning(training_arguments(recipe_from_dict({}), "loss")) is None  # auto: fp32 or units
    if warned:
        assert "train.bf16: auto picks fp32 here" in slow_precision_warning(forced)


def test_bf16_and_fp16_together_are_refused():
    with pytest.raises(UserError, match="train.bf16 and train.fp16 are both true"):
        recipe_from_dict({"train": {"bf16": True, "fp16": True}})
    with pytest.raises(UserError, match="train.bf16"):
        recipe_from_dict({"train": {"bf16": "sometimes"}})


def _embedding_model(sparse: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(20, 6, sparse=sparse), nn.Linear(6, 1))
    model.get_input_embeddings = lambda: model[0]
    return model


def _train(model, optimizer, batches, max_norm=None):
    for ids in batches:
        model(ids).square().mean().backward()
        if max_norm is not None:
            clip_grad_norm(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_lazy_adamw_is_adamw_on_rows_every_step_touches():
    every_row = [torch.arange(20)[torch.randperm(20)] for _ in range(5)]
    dense, lazy = _embedding_model(sparse=False), _embedding_model(sparse=True)
    kwargs = dict(lr=1e-2, weight_decay=0.1)
    _train(dense, torch.optim.AdamW(dense.parameters(), **kwargs), every_row)
    _train(lazy, LazyEmbeddingAdamW(lazy.parameters(), **kwargs, fused=True), every_row)
    for (name, a), b in zip(dense.named_parameters(), lazy.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_lazy_adamw_leaves_untouched_rows_where_dense_adamw_moves_them():
    first, then = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1])
    dense, lazy = _embedding_model(sparse=False), _embedding_model(sparse=True)
    start = lazy[0].weight.detach().clone()
    _train(dense, torch.optim.AdamW(dense.parameters(), lr=1e-2), [first, then])
    _train(lazy, LazyEmbeddingAdamW(lazy.parameters(), lr=1e-2), [first, then])
    moved_once = lazy[0].weight[2:4].detach()
    assert not torch.equal(moved_once, start[2:4])  # updated on the first step
    assert torch.equal(lazy[0].weight[4:], start[4:])  # never touched, never moved (no decay either)
    # Dense AdamW keeps moving rows 2-3 on the second step by their first moment; the lazy update does not.
    assert not torch.allclose(dense[0].weight[2:4], moved_once)
    assert torch.allclose(dense[0].weight[:2], lazy[0].weight[:2], atol=1e-6)


def test_lazy_adamw_state_resumes_from_a_state_dict():
    batches = [torch.tensor([1, 2, 2, 5]), torch.tensor([5, 7]), torch.tensor([1, 9])]
    straight = _embedding_model(sparse=True)
    _train(straight, LazyEmbeddingAdamW(straight.parameters(), lr=1e-2), batches)
    resumed = _embedding_model(sparse=True)
    optimizer = LazyEmbeddingAdamW(resumed.parameters(), lr=1e-2)
    _train(resumed, optimizer, batches[:2])
    saved_model, saved_optimizer = resumed.state_dict(), optimizer.state_dict()
    fresh = _embedding_model(sparse=True, seed=1)
    fresh.load_state_dict(saved_model)
    optimizer = LazyEmbeddingAdamW(fresh.parameters(), lr=1e-2)
    optimizer.load_state_dict(saved_optimizer)
    _train(fresh, optimizer, batches[2:])
    for a, b in zip(straight.parameters(), fresh.parameters()):
        assert torch.allclose(a, b)


def test_clip_grad_norm_of_sparse_rows_equals_torch_on_the_dense_gradient():
    ids = torch.tensor([3, 3, 4, 8])  # a repeated row: coalesced before its norm
    sparse, dense = _embedding_model(sparse=True), _embedding_model(sparse=False)
    for model in (sparse, dense):
        model(ids).sum().backward()
    expected = torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.5)
    assert torch.allclose(clip_grad_norm(sparse.parameters(), 0.5), expected)
    assert torch.allclose(sparse[0].weight.grad.to_dense(), dense[0].weight.grad)
    assert torch.allclose(sparse[1].weight.grad, dense[1].weight.grad)


class _Args:
    fp16, world_size = False, 1


def test_lazy_optimizer_applies_to_trainable_untied_embeddings_with_adamw_only():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    adamw = (torch.optim.AdamW, {"lr": 1e-3, "fused": True})
    assert lazy_embedding_optimizer(model, _Args(), adamw) == (LazyEmbeddingAdamW, adamw[1])
    assert model.get_input_embeddings().sparse
    model.get_input_embeddings().sparse = False
    assert lazy_embedding_optimizer(model, _Args(), (torch.optim.SGD, {})) == (torch.optim.SGD, {})
    model.get_input_embeddings().weight.requires_grad_(False)  # PEFT freezes them
    assert lazy_embedding_optimizer(model, _Args(), adamw) == adamw
    assert not model.get_input_embeddings().sparse


def test_train_runs_bf16_with_lazy_embeddings(tmp_path, recipe_file):
    """A tiny full fine-tuning through the CLI with the defaults, then again with both turned off: both finish,
    clip, log a finite gradient norm, and the fast one saves a model that loads with dense embeddings."""
    logs = {}
    for name, extra in (("fast", []), ("plain", ["train.bf16=false", "train.lazy_embeddings=false",
                                                 "train.fast_dropout=false"])):
        out = tmp_path / name
        result = mha_ft("train", "--recipe", str(recipe_file()), f"output_dir={out}", "train.max_steps=4",
                        "train.logging_steps=1", "train.max_grad_norm=0.5", *extra)
        assert result.returncode == 0, result.stderr
        logs[name] = json.loads((out / "log_history.json").read_text())
    norms = [entry["grad_norm"] for entry in logs["fast"] if "grad_norm" in entry]
    assert len(norms) == 4 and all(0 < n < float("inf") for n in norms)
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "fast")
    assert not saved.get_input_embeddings().sparse


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_drops_each_element_with_probability_p_and_rescales(p):
    torch.manual_seed(0)
    x = torch.rand(400, 1000, dtype=torch.bfloat16) + 1  # no zeros of its own
    dropped = FastDropout(p).train()(x) == 0
    # 400k Bernoulli(p) draws: the share dropped is within 5 standard deviations of p, in every column too.
    sd = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(dropped.float().mean().item() - p) < 5 * sd
    assert dropped.float().mean(0).sub(p).abs().max() < 5 * (p * (1 - p) / 400) ** 0.5
    threshold = round(p * 2**15)
    kept = FastDropout(p).train()
    torch.manual_seed(1)
    out = kept(x)
    torch.manual_seed(1)
    keep = keep_mask(x.shape, threshold)  # the same generator draws: a seed reproduces the mask
    torch.testing.assert_close(out, torch.where(keep, x * (2**15 / (2**15 - threshold)), 0))


def test_fast_dropout_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 48, requires_grad=True)
    out = FastDropout(0.1).train()(x)
    out.sum().backward()
    scale = 2**15 / (2**15 - round(0.1 * 2**15))
    torch.testing.assert_close(x.grad, (out != 0).float() * scale)


def test_fast_dropout_is_nn_dropout_where_it_does_not_apply():
    x = torch.randn(32, 16)
    assert torch.equal(FastDropout(0.1).eval()(x), x)
    # p = 1e-5 is 0.33 of 2^-15: rounding would move it by far more than 0.1 %, so the stock mask is drawn.
    for module in (FastDropout(1e-5), FastDropout(0.1, inplace=True)):
        torch.manual_seed(3)
        expected = torch.nn.functional.dropout(x.clone(), module.p, training=True)
        torch.manual_seed(3)
        assert torch.equal(module.train()(x.clone()), expected)


def test_fast_dropout_swaps_plain_dropouts_only_and_keeps_the_state_dict():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=32)).eval()
    keys = list(model.state_dict())
    batch = {"input_ids": torch.randint(5, 50, (2, 7))}
    with torch.no_grad():
        before = model(**batch).logits
        # embeddings; per layer the attention's (whose p the stock sdpa call reads), attention output and output;
        # the classifier
        assert fast_dropout(model) == 1 + 3 * 2 + 1
        torch.testing.assert_close(model(**batch).logits, before)
    assert all(type(m) is FastDropout for m in model.modules() if isinstance(m, nn.Dropout))
    assert list(model.state_dict()) == keys

    class OwnDropout(nn.Dropout):  # a subclass has its own forward, which the swap must not lose
        pass

    mixed = nn.Sequential(nn.Dropout(0.1), OwnDropout(0.1))
    assert fast_dropout(mixed) == 1 and [type(m) for m in mixed] == [FastDropout, OwnDropout]


def test_train_uses_fast_dropout_unless_turned_off(tmp_path, recipe_file, monkeypatch):
    from hf_mha import load_recipe, train
    from hf_mha import training

    swapped = []
    monkeypatch.setattr(training, "fast_dropout", lambda model: swapped.append(model))
    for value, runs in (("true", 1), ("false", 1)):
        train(load_recipe(str(recipe_file()), [f"output_dir={tmp_path / value}", "train.max_steps=1",
                                               f"train.fast_dropout={value}"]))
        assert len(swapped) == runs


def test_compile_dense_blocks_keeps_our_attention_eager_and_the_outputs():
    """`train.torch_compile` with our attention: the blocks between attention calls compiled with dynamic
    shapes, so two batches of different token counts reuse the graphs; names and outputs unchanged."""
    from transformers import BertConfig, BertForSequenceClassification

    from hf_mha.models import use_attention
    from hf_mha.speedups import compile_dense_blocks

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = use_attention(BertForSequenceClassification(config).eval(), "mha", unpad=True)
    names = [name for name, _ in model.named_parameters()]
    batches = [{"input_ids": torch.randint(5, 50, (3, n)), "attention_mask": torch.ones(3, n, dtype=torch.long)}
               for n in (7, 11)]
    with torch.no_grad():
        expected = [model(**batch).logits for batch in batches]
        # the embeddings' LayerNorm; per layer: attention output, intermediate, output; the pooler, the classifier
        assert compile_dense_blocks(model) == 1 + 2 * 3 + 2
        assert [name for name, _ in model.named_parameters()] == names
        for batch, logits in zip(batches, expected):
            assert torch.allclose(model(**batch).logits, logits, atol=1e-5)
