"""Model cards: every finished run (and every export, see test_export.py / test_onnx_export.py) holds a README.md
in the Hugging Face format whose metadata carries the metrics the run measured."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from conftest import intent_overrides
from hf_mha.errors import UserError
from hf_mha.model_card import check_hub_token, metadata, push_to_hub
from hf_mha_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("cards")
    (root / "data").mkdir()
    files = intent_overrides(root / "data")
    found = {}
    for name, tuning in (("full", []), ("lora", ["tuning.method=lora", "tuning.r=4"])):
        result = runner.invoke(app, ["train", "--recipe", "quickstart", f"model.name={tiny_model_dir}", *files, *tuning,
                                     "train.max_steps=3", "train.use_cpu=true", f"output_dir={root / name}"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        found[name] = root / name
    return found


def test_a_finished_run_has_a_card_with_its_metrics_in_the_metadata(runs):
    run = runs["full"]
    metrics = json.loads((run / "metrics.json").read_text())
    meta = metadata(run)
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    assert "base_model" not in meta  # a local folder is no hub id (the embedded MiniLM keeps its hub id)
    results = {(r["dataset"]["split"], m["type"]): m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert results[("validation", "accuracy")] == pytest.approx(metrics["eval_accuracy"], abs=1e-4)
    assert results[("test", "f1_macro")] == pytest.approx(metrics["test_f1_macro"], abs=1e-4)
    assert set(meta["metrics"]) == {"accuracy", "f1_macro"}
    text = (run / "README.md").read_text()
    for section in ("## Results", "## Training", "## Per-class report (validation)", "## Intended use and limits",
                    "## How to load it", "## Recipe", 'pipeline("text-classification"'):
        assert section in text
    assert ModelCard.load(run / "README.md").data.pipeline_tag == "text-classification"  # the hub's own parser reads it


def test_an_adapter_run_card_says_how_to_load_the_adapter(runs):
    text = (runs["lora"] / "README.md").read_text()
    assert "PeftModel.from_pretrained" in text and "mha-ft export" in text
    assert "lora" in metadata(runs["lora"])["tags"]


def test_push_to_hub_needs_a_token_and_says_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login
    with pytest.raises(UserError, match="no Hugging Face token"):
        check_hub_token("me/model")
    with pytest.raises(UserError, match="give the repository as user/name"):
        check_hub_token("model")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: as offline as it gets
    (tmp_path / "export").mkdir()
    with pytest.raises(UserError, match="could not upload to me/model.*The export is complete in"):
        push_to_hub(tmp_path / "export", "me/model")


@pytest.mark.parametrize("extra", [[], ["--format", "onnx"]], ids=["transformers", "onnx"])
def test_every_export_has_a_card_with_the_run_metrics(runs, tmp_path, extra):
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", "--run", str(runs["lora"]), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    meta = metadata(out)
    metrics = json.loads((runs["lora"] / "metrics.json").read_text())
    values = {m["type"]: m["value"] for r in meta["model-index"][0]["results"] if r["dataset"]["split"] == "test"
              for m in r["metrics"]}
    assert values["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    text = (out / "README.md").read_text()
    assert "Exported from the run" in text
    if extra:
        assert meta["library_name"] == "onnx" and "mha-ft predict --model" in text
    else:
        assert 'pipeline("text-classification"' in text and "PeftModel" not in text  # merged: plain transformers
