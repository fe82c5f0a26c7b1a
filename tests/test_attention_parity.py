"""Swapped models against stock transformers: every supported architecture and task head, padded batches of
sentence pairs, eval and train, stock `sdpa` and `eager`, every backend that runs on CPU, bf16 autocast, and
the round trip back to a plain transformers model. Tiny random models, so the whole file runs in seconds."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.models.bert.modeling_bert import BertEncoder

from hf_mha.attention import MultiHeadAttention, PackedBatch, restore_attention, swap_attention
from hf_mha.attention.swap import UnpaddedEncoder
from hf_mha.errors import UserError

ARCHS = ["bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert"]
HEADS = {
    "seq": AutoModelForSequenceClassification,
    "token": AutoModelForTokenClassification,
    "qa": AutoModelForQuestionAnswering,
}
#: Long and short sentences in one batch: the attention runs in several length buckets.
MIXED_LENGTHS = (30, 3, 4, 28, 2, 5)
LOGITS_ATOL = 1e-5
GRAD_ATOL = 1e-4



def tiny_config(arch: str, **overrides):
    """2 layers, width 32, 4 heads, every dropout 0 so train mode is deterministic."""
    if arch == "distilbert":
        sizes = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, dropout=0.0, attention_dropout=0.0,
                     seq_classif_dropout=0.0, qa_dropout=0.0)
    else:
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if arch == "albert":  # factorised embeddings and one layer shared by both layers
        sizes.update(embedding_size=16, classifier_dropout_prob=0.0)
    if arch == "electra":  # embedding_size != hidden_size adds embeddings_project
        sizes.update(embedding_size=16)
    if arch in ("roberta", "xlm-roberta"):
        sizes.update(pad_token_id=1, type_vocab_size=1)
    else:
        sizes.update(pad_token_id=0)
    settings = dict(vocab_size=99, max_position_embeddings=64, num_labels=3, **sizes)
    return AutoConfig.for_model(arch, **{**settings, **overrides})


def tiny_model(arch: str, head: str = "seq", attn: str = "sdpa", seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    auto = HEADS[head] if head in HEADS else AutoModel
    if head == "qa":
        overrides = {"num_labels": 2, **overrides}  # start and end logits
    return auto.from_config(tiny_config(arch, **overrides), attn_implementation=attn)


def make_batch(arch: str, lengths=(10, 7, 3), seq_len: int | None = None, left_pad: bool = False, seed: int = 1):
    """Sentence pairs (second segment marked in token_type_ids where the architecture has them), padded to
    `seq_len` (default: the longest), on the right or the left."""
    config = tiny_config(arch)
    generator = torch.Generator().manual_seed(seed)
    seq_len = seq_len or max(lengths)
    positions = torch.arange(seq_len)[None, :]
    lengths_t = torch.tensor(lengths)[:, None]
    keep = (positions >= seq_len - lengths_t) if left_pad else (positions < lengths_t)
    input_ids = torch.randint(5, config.vocab_size, (len(lengths), seq_len), generator=generator)
    input_ids[~keep] = config.pad_token_id
    batch = {"input_ids": input_ids, "attention_mask": keep.long()}
    if getattr(config, "type_vocab_size", 1) > 1:
        rank = keep.cumsum(1)
        batch["token_type_ids"] = ((rank > lengths_t // 2) & keep).long()
    return batch


def real_outputs(outputs, head: str, keep: torch.Tensor) -> list[torch.Tensor]:
    """The outputs that mean something: stock values at padding positions are arbitrary."""
    if head == "seq":
        return [outputs.logits]
    if head == "token":
        return [outputs.logits[keep]]
    if head == "qa":
        return [outputs.start_logits[keep], outputs.end_logits[keep]]
    return [outputs.last_hidden_state[keep]]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def swapped_copy(model: nn.Module, **swap_kwargs) -> nn.Module:
    return swap_attention(copy.deepcopy(model), **swap_kwargs)


def stock_ours_and_batch(arch: str, head: str, attn: str, training: bool):
    """A tiny stock model in train or eval mode, a swapped copy of it, and a padded batch for both."""
    stock = tiny_model(arch, head, attn).train(training)
    return stock, swapped_copy(stock), make_batch(arch)


def outputs_diff(stock, ours, batch, head) -> float:
    keep = batch["attention_mask"].bool()
    return max_diff(real_outputs(stock(**batch), head, keep), real_outputs(ours(**batch), head, keep))


def grads_after_loss(model, batch, head) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    keep = batch["attention_mask"].bool()
    weights = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=weights)).sum() for t in real_outputs(model(**batch), head, keep))
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_match_stock_in_eval(arch, head, attn):
    stock, ours, batch = stock_ours_and_batch(arch, head, attn, training=False)
    with torch.no_grad():
        assert outputs_diff(stock, ours, batch, head) < LOGITS_ATOL


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_train_mode_logits_and_gradients_match_stock(arch, head, attn):
    stock, ours, batch = stock_ours_and_batch(arch, head, attn, training=True)
    assert outputs_diff(stock, ours, batch, head) < LOGITS_ATOL

    stock_grads, our_grads = grads_after_loss(stock, batch, head), grads_after_loss(ours, batch, head)
    assert stock_grads.keys() == our_grads.keys()
    assert len(stock_grads) > 10
    for name, grad in stock_grads.items():
        assert (grad - our_grads[name]).abs().max().item() < GRAD_ATOL, name


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_match_stock_on_real_tokens(arch):
    stock = tiny_model(arch, "base").eval()
    ours = swapped_copy(stock)
    batch = make_batch(arch)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = stock(**batch, output_hidden_states=True)
        got = ours(**batch, output_hidden_states=True)
        unpadded = ours(**batch)
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    for want, have in zip(expected.hidden_states, got.hidden_states):
        assert (want[keep] - have[keep]).abs().max() < LOGITS_ATOL
    assert (expected.last_hidden_state[keep] - unpadded.last_hidden_state[keep]).abs().max() < LOGITS_ATOL
    assert unpadded.last_hidden_state[~keep].abs().max() == 0  # re-padded with zeros


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex", "nested"])
def test_each_cpu_backend_matches_stock(arch, backend):
    stock = tiny_model(arch, "token").eval()
    batch = make_batch(arch)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = real_outputs(stock(**batch), "token", keep)
        for unpad in (True, False):
            ours = swapped_copy(stock, backend=backend, unpad=unpad)
            assert max_diff(expected, real_outputs(ours(**batch), "token", keep)) < LOGITS_ATOL, unpad


@pytest.mark.parametrize("backend", ["reference", "sdpa", "nested"])
@pytest.mark.parametrize("arch", ["bert", "albert", "distilbert"])
@pytest.mark.parametrize("lengths", [(10, 7, 3), MIXED_LENGTHS])
def test_unpadded_equals_padded_in_training(arch, backend, lengths):
    model = tiny_model(arch, "qa").train()
    unpadded, padded = swapped_copy(model, backend=backend), swapped_copy(model, backend=backend, unpad=False)
    batch = make_batch(arch, lengths=lengths)
    keep = batch["attention_mask"].bool()
    assert max_diff(real_outputs(unpadded(**batch), "qa", keep), real_outputs(padded(**batch), "qa", keep)) < 1e-5
    grads_unpadded, grads_padded = grads_after_loss(unpadded, batch, "qa"), grads_after_loss(padded, batch, "qa")
    for name, grad in grads_padded.items():
        assert (grad - grads_unpadded[name]).abs().max().item() < GRAD_ATOL, name


@pytest.mark.parametrize(
    "layout",
    [
        dict(left_pad=True),  # real tokens move to the front of the compact layout
        dict(seq_len=16),  # padded to a fixed length beyond the longest sequence
        dict(lengths=(8, 8, 8)),  # no padding: nothing to unpad
        dict(lengths=(9, 1, 4)),
        dict(lengths=MIXED_LENGTHS),
    ],
)
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_padding_layouts_match_stock(arch, layout):
    stock = tiny_model(arch, "token").eval()
    ours = swapped_copy(stock)
    batch = make_batch(arch, **layout)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        assert max_diff(real_outputs(stock(**batch), "token", keep), real_outputs(ours(**batch), "token", keep)) < 1e-5


def test_no_attention_mask_matches_stock():
    stock = tiny_model("bert", "seq").eval()
    ours = swapped_copy(stock)
    input_ids = make_batch("bert", lengths=(6, 6))["input_ids"]
    with torch.no_grad():
        assert (stock(input_ids=input_ids).logits - ours(input_ids=input_ids).logits).abs().max() < LOGITS_ATOL


@pytest.mark.parametrize("arch", ARCHS)
def test_several_length_buckets_match_stock_with_gradients(arch):
    stock = tiny_model(arch, "token").train()
    ours = swapped_copy(stock)
    batch = make_batch(arch, lengths=MIXED_LENGTHS)
    assert len(PackedBatch.from_padding_mask(batch["attention_mask"].bool()).buckets) > 1
    stock_grads, our_grads = grads_after_loss(stock, batch, "token"), grads_after_loss(ours, batch, "token")
    for name, grad in stock_grads.items():
        assert (grad - our_grads[name]).abs().max().item() < GRAD_ATOL, name


def test_gradient_checkpointing_with_unpadding_matches_stock():
    stock = tiny_model("bert", "token").train()
    ours = swapped_copy(stock)
    for model in (stock, ours):
        model.activation_checkpointing_enable()
    batch = make_batch("bert", lengths=MIXED_LENGTHS)
    stock_grads, our_grads = grads_after_loss(stock, batch, "token"), grads_after_loss(ours, batch, "token")
    for name, grad in stock_grads.items():
        assert (grad - our_grads[name]).abs().max().item() < GRAD_ATOL, name


@pytest.mark.parametrize("arch", ARCHS)
def test_swap_keeps_parameter_and_linear_module_names(arch):
    stock = tiny_model(arch, "qa")
    ours = swapped_copy(stock)
    assert list(stock.state_dict()) == list(ours.state_dict())
    linear_names = lambda m: [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)]  # noqa: E731
    assert linear_names(stock) == linear_names(ours)
    assert any(isinstance(m, MultiHeadAttention) for m in ours.modules())


def test_swapped_model_survives_pickling(tmp_path):
    stock = tiny_model("distilbert", "token").eval()
    ours = swapped_copy(stock)
    torch.save(ours, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    batch = make_batch("distilbert")
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        expected, got = real_outputs(stock(**batch), "token", keep), real_outputs(loaded(**batch), "token", keep)
    assert max_diff(expected, got) < 1e-5


def test_swap_reuses_the_pretrained_projection_modules():
    stock = tiny_model("bert", "seq")
    query = stock.bert.encoder.layer[0].attention.self.query
    swap_attention(stock)
    assert stock.bert.encoder.layer[0].attention.self.query is query


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_restore_gives_back_the_stock_model(arch, attn):
    stock = tiny_model(arch, "token", attn).eval()
    model = restore_attention(swapped_copy(stock))
    assert [type(m) for m in model.modules()] == [type(m) for m in stock.modules()]
    assert model.config._attn_implementation == attn
    assert not any(isinstance(m, UnpaddedEncoder) for m in model.modules())
    batch = make_batch(arch)
    with torch.no_grad():
        assert torch.equal(stock(**batch).logits, model(**batch).logits)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("restore_first", [True, False])
def test_saved_model_loads_with_plain_transformers(arch, restore_first, tmp_path):
    """Exported after restore_attention, or checkpointed while swapped (what Trainer does mid-training)."""
    stock = tiny_model(arch, "qa").eval()
    ours = swapped_copy(stock)
    if restore_first:
        restore_attention(ours)
    ours.save_pretrained(tmp_path)
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert not any(isinstance(m, MultiHeadAttention) for m in loaded.modules())
    batch = make_batch(arch)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        assert max_diff(real_outputs(stock(**batch), "qa", keep), real_outputs(loaded(**batch), "qa", keep)) < 1e-6


def test_swap_twice_changes_backend_and_unpadding():
    stock = tiny_model("bert", "token").eval()
    ours = swapped_copy(stock, backend="reference")
    swap_attention(ours, backend="sdpa", unpad=False)
    assert {m.backend for m in ours.modules() if isinstance(m, MultiHeadAttention)} == {"sdpa"}
    assert type(ours.bert.encoder) is BertEncoder
    swap_attention(ours, unpad=True)
    assert isinstance(ours.bert.encoder, UnpaddedEncoder)
    batch = make_batch("bert")
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        assert max_diff(real_outputs(stock(**batch), "token", keep), real_outputs(ours(**batch), "token", keep)) < 1e-5
    restore_attention(ours)
    assert ours.config._attn_implementation == "sdpa"


def test_unsupported_architecture_lists_the_supported_ones():
    config = AutoConfig.for_model("deberta-v2", vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64)
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(UserError, match="bert, roberta, xlm-roberta, electra, albert, distilbert.*deberta-v2"):
        swap_attention(model)
    assert restore_attention(model) is model  # nothing to restore is not an error


def test_decoder_configs_are_refused():
    with pytest.raises(UserError, match="encoders only"):
        swap_attention(tiny_model("bert", "base", is_decoder=True))


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("backend", ["sdpa", "nested"])
def test_bf16_autocast_matches_stock_bf16(arch, backend):
    """`train.bf16: auto` on CPU: ours under bf16 autocast against stock under bf16 autocast, forward and the
    gradients of a train step, within bf16's tolerance (8 mantissa bits: a relative step of 2**-8)."""
    stock = tiny_model(arch, "token").train()
    ours = swapped_copy(stock, backend=backend)
    batch = make_batch(arch, lengths=MIXED_LENGTHS)
    keep = batch["attention_mask"].bool()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = real_outputs(stock(**batch), "token", keep), real_outputs(ours(**batch), "token", keep)
        assert got[0].dtype == torch.bfloat16
        stock_grads, our_grads = grads_after_loss(stock, batch, "token"), grads_after_loss(ours, batch, "token")
    scale = expected[0].abs().max().item()
    assert max_diff(expected, got) < 2**-6 * scale
    for name, grad in stock_grads.items():
        # The floor: the key bias's true gradient is 0 (softmax ignores a shift), so it holds rounding only.
        assert (grad - our_grads[name]).abs().max().item() < 2**-5 * grad.abs().max().item() + 1e-5, name
