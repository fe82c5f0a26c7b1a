"""Heads as objects: importance (Michel et al. 2019), pruning, pruned save/load/export, and `mha-ft heads`."""

import json

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)
from typer.testing import CliRunner

from hf_mha.attention import attention_modules, restore_attention, set_head_mask, swap_attention
from hf_mha.attention.importance import head_importance
from hf_mha.attention.pruning import kept_heads, load_pruned, prune_by_importance, prune_heads, unprune_for_export
from hf_mha.errors import UserError

SIZES = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=32)
MODELS = {
    "bert": (BertForSequenceClassification, lambda: BertConfig(**SIZES)),
    "roberta": (RobertaForSequenceClassification, lambda: RobertaConfig(**SIZES, pad_token_id=1)),
    "distilbert": (DistilBertForSequenceClassification, lambda: DistilBertConfig(
        vocab_size=60, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=32)),
    "albert": (AlbertForSequenceClassification, lambda: AlbertConfig(**SIZES, embedding_size=16)),
}
# ALBERT has one attention module shared by both layers, so only module 0 exists to prune.
PRUNE = {"bert": {0: [1, 3], 1: [0]}, "roberta": {0: [1, 3], 1: [0]}, "distilbert": {0: [1, 3], 1: [0]},
         "albert": {0: [1, 3]}}


def tiny(kind: str, backend: str = "sdpa"):
    model_class, make_config = MODELS[kind]
    torch.manual_seed(0)
    return swap_attention(model_class(make_config()).eval(), backend=backend)


def batch(labels: bool = True) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = {"input_ids": torch.randint(3, 60, (4, 9), generator=generator),
              "attention_mask": torch.ones(4, 9, dtype=torch.long)}
    inputs["attention_mask"][1, 5:] = 0  # padding, so the unpadded path runs too
    inputs["attention_mask"][3, 7:] = 0
    return inputs | ({"labels": torch.tensor([0, 1, 1, 0])} if labels else {})


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


def mask_for(model, heads_to_prune) -> list[torch.Tensor]:
    rows = [torch.ones(m.num_heads) for m in attention_modules(model)]
    for module, heads in heads_to_prune.items():
        rows[module][heads] = 0.0
    return rows


# --------------------------------------------------------------------------- importance


def test_importance_is_the_mask_gradient():
    """Unnormalised importance on one batch equals |dL/dmask_h| measured by central finite differences."""
    model = tiny("bert", backend="reference").double()
    inputs = batch()
    scores = head_importance(model, [inputs], normalize_layers=False)
    assert scores.shape == (2, 4) and bool((scores >= 0).all())
    eps = 1e-4
    for layer, head in [(0, 0), (0, 3), (1, 2)]:
        losses = []
        for sign in (1, -1):
            rows = [torch.ones(4, dtype=torch.float64) for _ in range(2)]
            rows[layer][head] += sign * eps
            set_head_mask(model, rows)
            with torch.no_grad():
                losses.append(model(**inputs).loss.item())
        set_head_mask(model, None)
        assert scores[layer, head].item() == pytest.approx(abs(losses[0] - losses[1]) / (2 * eps), rel=1e-5)
    assert all(p.grad is None for p in model.parameters()), "scoring must not leave gradients on the weights"


def test_importance_normalisation_and_pruned_heads():
    model = tiny("distilbert")
    scores = head_importance(model, [batch()])
    torch.testing.assert_close(scores.pow(2).sum(dim=1), torch.ones(2))  # per-layer L2, as in the paper's code
    glob = head_importance(model, [batch()], normalize_global=True)
    assert glob.min().item() == pytest.approx(0.0) and glob.max().item() == pytest.approx(1.0)

    prune_heads(model, {0: [2]})
    after = head_importance(model, [batch()])
    assert after.shape == (2, 4), "columns keep the original head numbering"
    assert torch.isnan(after[0, 2]) and not torch.isnan(after[0, [0, 1, 3]]).any()


def test_importance_needs_labels():
    with pytest.raises(UserError, match="no labels"):
        head_importance(tiny("bert"), [batch(labels=False)])


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("kind", list(MODELS))
def test_pruned_model_equals_masked_model(kind):
    model, inputs = tiny(kind), batch()
    set_head_mask(model, mask_for(model, PRUNE[kind]))
    expected = logits(model, inputs)
    set_head_mask(model, None)
    before = sum(p.numel() for p in model.parameters())

    prune_heads(model, PRUNE[kind])

    gone, d_k = sum(len(h) for h in PRUNE[kind].values()), 32 // 4
    # per head: d_k rows of W^Q, W^K, W^V and their biases, d_k columns of W^O
    assert before - sum(p.numel() for p in model.parameters()) == gone * (4 * d_k * 32 + 3 * d_k)
    assert [m.num_heads for m in attention_modules(model)] == [4 - len(PRUNE[kind].get(i, [])) for i in
                                                              range(len(attention_modules(model)))]
    torch.testing.assert_close(logits(model, inputs), expected, atol=1e-5, rtol=0)


def test_albert_prunes_the_shared_module_at_every_depth():
    model = tiny("albert")
    with pytest.raises(UserError, match="ALBERT shares its attention module"):
        prune_heads(model, {1: [0]})
    prune_heads(model, {0: [0]})
    assert model.config.hf_mha_pruned_heads == {"0": [0]}


def test_pruning_keeps_original_numbering_and_one_head_per_module():
    model = tiny("bert")
    prune_heads(model, {0: [0, 1]})
    prune_heads(model, {0: [1, 3]})  # head 1 is already gone: only 3 goes
    assert kept_heads(model) == [[2], [0, 1, 2, 3]]
    assert model.config.hf_mha_pruned_heads == {"0": [0, 1, 3]}
    with pytest.raises(UserError, match="at least one head"):
        prune_heads(model, {0: [2]})
    with pytest.raises(UserError, match="out of range"):
        prune_heads(model, {1: [4]})


def test_prune_by_importance_takes_the_least_important_but_never_a_last_head():
    model = tiny("bert")
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.7, 0.05]])
    assert prune_by_importance(model, scores, count=3) == {0: [0, 1], 1: [3]}
    # 0.9 of the 5 heads left asks for 4, but each module keeps its last head: only 3 can go.
    nan = float("nan")
    scores = torch.tensor([[nan, nan, 0.1, 0.2], [0.3, 0.4, 0.5, nan]])
    assert prune_by_importance(model, scores, fraction=0.9) == {0: [2], 1: [0, 1]}
    assert [m.num_heads for m in attention_modules(model)] == [1, 1]


def test_pruned_model_trains():
    model = tiny("roberta").train()
    prune_heads(model, PRUNE["roberta"])
    query = attention_modules(model)[0].query
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(**batch()).loss
    loss.backward()
    assert torch.isfinite(loss) and query.weight.grad is not None and query.weight.grad.abs().sum() > 0
    before = query.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, query.weight)


# --------------------------------------------------------------------------- save, load, export


@pytest.mark.parametrize("kind", ["bert", "distilbert", "albert"])
def test_pruned_save_load_and_zero_filled_export(kind, tmp_path):
    model_class = MODELS[kind][0]
    model, inputs = tiny(kind), batch()
    prune_heads(model, PRUNE[kind])
    expected = logits(model, inputs)
    restore_attention(model).save_pretrained(tmp_path / "pruned")

    loaded = load_pruned(AutoModelForSequenceClassification, tmp_path / "pruned")
    assert not attention_modules_present(loaded), "load_pruned returns the stock layout, like from_pretrained"
    torch.testing.assert_close(logits(loaded, inputs), expected, atol=1e-5, rtol=0)  # stock attention, pruned
    swap_attention(loaded, backend="sdpa")
    assert kept_heads(loaded) == kept_heads(tiny_pruned(kind))
    torch.testing.assert_close(logits(loaded, inputs), expected, atol=1e-5, rtol=0)

    restore_attention(unprune_for_export(loaded)).save_pretrained(tmp_path / "export")
    plain = model_class.from_pretrained(tmp_path / "export").eval()  # plain transformers, no hf_mha involved
    assert not hasattr(plain.config, "hf_mha_pruned_heads")
    torch.testing.assert_close(logits(plain, inputs), expected, atol=1e-5, rtol=0)


def test_load_pruned_is_from_pretrained_for_unpruned_folders(tmp_path):
    model = tiny("bert")
    restore_attention(model).save_pretrained(tmp_path)
    loaded = load_pruned(AutoModelForSequenceClassification, tmp_path, num_labels=2)
    torch.testing.assert_close(logits(loaded, batch()), logits(model, batch()))


def attention_modules_present(model) -> bool:
    try:
        return bool(attention_modules(model))
    except UserError:
        return False


def tiny_pruned(kind):
    return prune_heads(tiny(kind), PRUNE[kind])


# --------------------------------------------------------------------------- mha-ft heads


@pytest.fixture(scope="module")
def heads_run(tmp_path_factory, tiny_model_dir):
    from conftest import INTENT_EXAMPLES, write_jsonl

    from hf_mha_cli.main import app

    folder = tmp_path_factory.mktemp("heads")
    rows = [{"text": t, "label": label} for t, label in INTENT_EXAMPLES]
    files = {s: write_jsonl(folder / f"{s}.jsonl", rows * (2 if s == "train" else 1)) for s in ("train", "validation")}
    out = folder / "run"
    result = CliRunner().invoke(app, [
        "train", "--recipe", "quickstart", f"model.name={tiny_model_dir}", "model.attention=mha",
        *(f"data.files.{s}={p}" for s, p in files.items()), "data.files.test=null",
        "train.num_train_epochs=1", "train.per_device_train_batch_size=8", "train.use_cpu=true", f"output_dir={out}",
    ])
    assert result.exit_code == 0, result.output[-3000:]
    return out


def test_heads_cli_writes_maps_importance_and_a_pruned_run(heads_run, tmp_path):
    from hf_mha.tasks import get_task
    from hf_mha_cli.main import app

    pruned = tmp_path / "pruned"
    result = CliRunner().invoke(app, [
        "heads", "--run", str(heads_run), "--text", "where is my order", "--importance",
        "--prune", "0.5", "--out", str(pruned),
    ])
    assert result.exit_code == 0, result.output[-3000:]
    for name in ("attention_maps.png", "head_importance.png", "head_importance.json"):
        assert (heads_run / name).stat().st_size > 0, name
    report = json.loads((heads_run / "head_importance.json").read_text())
    assert report["source"] == "validation" and len(report["importance"]) == 2 and len(report["importance"][0]) == 4

    for name in ("recipe.yaml", "metrics.json", "config.json", "model.safetensors", "tokenizer.json"):
        assert (pruned / name).is_file(), name
    metrics = json.loads((pruned / "metrics.json").read_text())
    assert (metrics["heads_before"], metrics["heads_after"]) == (8, 4)
    assert metrics["total_params"] < metrics["params_before"]
    model = load_pruned(get_task("text-classification").model_class, pruned)
    assert sum(p.numel() for p in model.parameters()) == metrics["total_params"]


def test_heads_cli_bad_input(heads_run, tmp_path, capsys):
    from hf_mha_cli.main import main

    for options, message in [([], "nothing to do"), (["--prune", "0.5"], "needs --out"),
                             (["--importance", "--split", "test"], "no 'test' split")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["heads", "--run", str(heads_run), *options])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
