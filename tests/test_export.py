"""`mha-ft export`: merged folders load with plain transformers and compute what the run's model computes;
methods that cannot merge export base + adapter; and a LoRA run end to end through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from typer.testing import CliRunner

from hf_mha.attention import restore_attention, swap_attention
from hf_mha.attention.pruning import load_pruned, prune_heads
from hf_mha.errors import UserError
from hf_mha.export import export_run
from hf_mha.recipe import recipe_from_dict
from hf_mha.tuning import load_tuned_model, resolve
from hf_mha.tuning.bottleneck import load_bottleneck_adapters
from hf_mha_cli.main import app

from conftest import INTENT_EXAMPLES, mha_ft, write_jsonl

LABELS = ["account", "refund", "status"]


def encode(tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def logits(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def make_run(folder, base_dir, tuning: dict, attention: str = "stock"):
    """A finished run folder, as `mha-ft train` leaves it, from a few steps on the intent examples."""
    recipe = recipe_from_dict({"model": {"name": str(base_dir), "attention": attention}, "tuning": tuning,
                               "output_dir": str(folder)})
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    torch.manual_seed(0)
    model = load_pruned(  # from_pretrained, which also reads a base whose heads were pruned
        AutoModelForSequenceClassification, base_dir, num_labels=3, id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)})
    if attention == "mha":
        swap_attention(model)
    model = resolve(recipe).apply(model)
    inputs = encode(tokenizer, [text for text, _ in INTENT_EXAMPLES])
    labels = torch.tensor([LABELS.index(label) for _, label in INTENT_EXAMPLES])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(6):
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    resolve(recipe).save(model, folder)
    tokenizer.save_pretrained(folder)
    (folder / "recipe.yaml").write_text(recipe.to_yaml())
    (folder / "metrics.json").write_text("{}")
    return model, inputs


MERGEABLE = {
    "full": {"method": "full"},
    "lora": {"method": "lora", "r": 4, "lora_alpha": 8},
    "dora": {"method": "dora", "r": 4, "target_modules": "attention"},
    "adalora": {"method": "adalora", "init_r": 4, "total_step": 6},
    "ia3": {"method": "ia3"},
    "loha": {"method": "loha", "r": 4},
    "lokr": {"method": "lokr", "r": 4},
}
UNMERGEABLE = {
    "prefix": {"method": "prefix", "num_virtual_tokens": 4},
    "prompt": {"method": "prompt", "num_virtual_tokens": 4},
    "adapter": {"method": "adapter", "placement": "houlsby", "reduction_factor": 4},
}


@pytest.mark.parametrize("method, attention, arch", [
    *[(method, "stock", "bert") for method in MERGEABLE],
    ("lora", "mha", "bert"), ("ia3", "mha", "bert"), ("lora", "stock", "distilbert"), ("lora", "mha", "distilbert"),
    ("ia3", "stock", "roberta"), ("loha", "stock", "roberta"),
])
def test_merged_export_loads_with_plain_transformers(method, attention, arch, tmp_path, encoder_dirs):
    trained, inputs = make_run(tmp_path / "run", encoder_dirs[arch], MERGEABLE[method], attention)
    exported = export_run(tmp_path / "run", tmp_path / "out")
    assert exported.merged == (method != "full")
    assert exported.max_abs_diff < 1e-5
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not files & {"adapter_config.json", "README.txt", "adapter"}
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert plain.config.id2label == dict(enumerate(LABELS))
    # Our attention and the stock one agree to ~1e-6, not bit for bit.
    torch.testing.assert_close(logits(plain, inputs), logits(trained, inputs), rtol=0,
                               atol=1e-5 if attention == "stock" else 1e-4)
    assert not list(tmp_path.glob(".out.*")), "staging folder left behind"


@pytest.fixture(scope="module")
def pruned_base_dir(tmp_path_factory, tiny_model_dir):
    """The tiny BERT with three of its eight heads pruned, saved as `mha-ft heads --prune` saves a run."""
    folder = tmp_path_factory.mktemp("pruned")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    prune_heads(swap_attention(model), {0: [1, 3], 1: [0]})
    restore_attention(model).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", ["full", "lora", "adapter"])
def test_a_run_of_pruned_heads_exports_whole(method, tmp_path, pruned_base_dir):
    tuning = {**MERGEABLE, **UNMERGEABLE}[method]
    trained, inputs = make_run(tmp_path / "run", pruned_base_dir, tuning)
    recipe = recipe_from_dict({"model": {"name": str(pruned_base_dir)}, "tuning": tuning})
    torch.testing.assert_close(logits(load_tuned_model(recipe, tmp_path / "run"), inputs), logits(trained, inputs),
                               rtol=0, atol=1e-6)  # what eval --run and predict load
    exported = export_run(tmp_path / "run", tmp_path / "out")
    assert exported.max_abs_diff < 1e-5
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert plain.config.num_attention_heads == 4 and not hasattr(plain.config, "hf_mha_pruned_heads")
    if method == "adapter":
        plain = load_bottleneck_adapters(plain, tmp_path / "out" / "adapter")
    torch.testing.assert_close(logits(plain, inputs), logits(trained, inputs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", UNMERGEABLE)
def test_unmergeable_export_holds_base_and_adapter(method, tmp_path, tiny_model_dir):
    trained, inputs = make_run(tmp_path / "run", tiny_model_dir, UNMERGEABLE[method])
    out = tmp_path / "out"
    exported = export_run(tmp_path / "run", out)
    assert not exported.merged and exported.summary.startswith("not merged: ")
    assert exported.max_abs_diff < 1e-5
    readme = (out / "README.txt").read_text()
    base = AutoModelForSequenceClassification.from_pretrained(out)
    if method == "adapter":
        assert "non-linearity" in exported.summary and "load_bottleneck_adapters" in readme
        model = load_bottleneck_adapters(base, out / "adapter")
    else:
        assert "virtual tokens" in exported.summary and "PeftModel.from_pretrained" in readme
        model = PeftModel.from_pretrained(base, out / "adapter")
    torch.testing.assert_close(logits(model, inputs), logits(trained, inputs), rtol=0, atol=1e-6)
    # mha-ft's own loader finds the adapter beside the base weights (eval --model OUT)
    recipe = recipe_from_dict({"model": {"name": "not-needed"}, "tuning": UNMERGEABLE[method]})
    reloaded = load_tuned_model(recipe, out)
    torch.testing.assert_close(logits(reloaded, inputs), logits(trained, inputs), rtol=0, atol=1e-6)


def test_export_refuses_a_non_empty_out_and_a_run_that_is_not_finished(tmp_path, tiny_model_dir):
    make_run(tmp_path / "run", tiny_model_dir, MERGEABLE["lora"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty; export never overwrites"):
        export_run(tmp_path / "run", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / "run" / "metrics.json").unlink()
    with pytest.raises(UserError, match="has not finished training"):
        export_run(tmp_path / "run", tmp_path / "new")
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- the CLI, end to end


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("lora-e2e")
    rows = [{"text": t, "label": l} for t, l in INTENT_EXAMPLES]
    files = {split: write_jsonl(folder / f"{split}.jsonl", rows * (3 if split == "train" else 1))
             for split in ("train", "validation", "test")}
    out = folder / "run"
    result = mha_ft(
        "train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
        *(f"data.files.{s}={p}" for s, p in files.items()),
        "train.num_train_epochs=3", "train.learning_rate=5e-3", "train.per_device_train_batch_size=4",
        "train.use_cpu=true", "tuning.method=lora", "tuning.r=4", "tuning.target_modules=attention",
        f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_lora_run_through_the_cli(lora_run, tmp_path):
    out, result = lora_run
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files, "a LoRA run keeps the adapter only"
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["trainable_percent"] < 100 and metrics["trainable_params"] < metrics["total_params"]
    assert "tuning lora" in result.stdout and "trainable parameters" in result.stdout

    runner = CliRunner()
    scored = runner.invoke(app, ["eval", "--run", str(out), "--split", "test"])
    assert scored.exit_code == 0, scored.output
    rescored = json.loads((out / "test_metrics.json").read_text())
    assert rescored["test_accuracy"] == pytest.approx(metrics["test_accuracy"])

    inputs = tmp_path / "new.csv"
    inputs.write_text("text\nwhere is my parcel\nreset my password\n")
    preds = tmp_path / "preds.jsonl"
    predicted = runner.invoke(app, ["predict", "--run", str(out), "--input", str(inputs), "--output", str(preds)])
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]

    exported = tmp_path / "exported"
    result = runner.invoke(app, ["export", "--run", str(out), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    assert "merged the lora adapter" in result.output
    plain = AutoModelForSequenceClassification.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    probabilities = logits(plain, encode(tokenizer, ["where is my parcel", "reset my password"])).softmax(-1)
    for row, probs in zip(rows, probabilities):
        assert row["predicted"] == plain.config.id2label[int(probs.argmax())]
        assert [row["probabilities"][label] for label in LABELS] == pytest.approx(probs.tolist(), abs=1e-5)

    again = runner.invoke(app, ["export", "--run", str(out), "--out", str(exported)])
    assert isinstance(again.exception, UserError) and "exists and is not empty" in str(again.exception)
