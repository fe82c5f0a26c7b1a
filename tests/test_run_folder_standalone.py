"""A run folder stands alone: the README's commands, run through the CLI in the order the README gives them,
work from any working directory, and `eval --split S` reads only split S."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INTENT_EXAMPLES, write_jsonl


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_mha_cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, tiny_model_dir):
    """`mha-ft train --recipe quickstart` as the README gives it (the built-in recipe and its shipped data, the
    default output_dir runs/quickstart relative to the working folder), on the tiny model for one epoch."""
    home = tmp_path_factory.mktemp("user")
    first, elsewhere = home / "project", home / "elsewhere"
    first.mkdir(), elsewhere.mkdir()
    result = _cli(first, "train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                  "train.num_train_epochs=1", "train.use_cpu=true")
    assert result.returncode == 0, result.stderr[-3000:]
    return first / "runs" / "quickstart", elsewhere


def test_the_saved_recipe_holds_absolute_data_paths(quickstart_run):
    import yaml

    run, _ = quickstart_run
    files = yaml.safe_load((run / "recipe.yaml").read_text())["data"]["files"]
    assert set(files) == {"train", "validation", "test"}
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in files.values()), files


def test_readme_eval_from_another_working_directory(quickstart_run):
    run, elsewhere = quickstart_run
    relative = os.path.relpath(run, elsewhere)
    result = _cli(elsewhere, "eval", "--run", relative, "--split", "test")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Generating" not in result.stderr and "pin_memory" not in result.stderr, result.stderr
    trained = json.loads((run / "metrics.json").read_text())
    rescored = json.loads((run / "test_metrics.json").read_text())
    assert rescored["test_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-9)
    assert not (elsewhere / "runs").exists(), "eval writes into the run folder, not the working folder"


def test_readme_predict_from_another_working_directory(quickstart_run):
    run, elsewhere = quickstart_run
    (elsewhere / "new.jsonl").write_text('{"text": "my parcel never showed up"}\n')
    result = _cli(elsewhere, "predict", "--run", os.path.relpath(run, elsewhere), "--input", "new.jsonl",
                  "--output", "preds.jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Generating" not in result.stderr and "pin_memory" not in result.stderr, result.stderr
    rows = [json.loads(line) for line in (elsewhere / "preds.jsonl").read_text().splitlines()]
    labels = json.loads((run / "config.json").read_text())["id2label"].values()
    assert len(rows) == 1 and rows[0]["predicted"] in labels


def test_export_from_another_working_directory(quickstart_run):
    from transformers import AutoModelForSequenceClassification

    run, elsewhere = quickstart_run
    result = _cli(elsewhere, "export", "--run", os.path.relpath(run, elsewhere), "--out", "exported")
    assert result.returncode == 0, result.stderr[-2000:]
    model = AutoModelForSequenceClassification.from_pretrained(elsewhere / "exported")
    assert model.config.id2label == {int(k): v for k, v in json.loads((run / "config.json").read_text())["id2label"].items()}


def test_eval_of_a_split_needs_only_that_split(tmp_path, tiny_model_dir):
    rows = [{"text": t, "label": l} for t, l in INTENT_EXAMPLES]
    data = tmp_path / "data"
    data.mkdir()
    files = {s: write_jsonl(data / f"{s}.jsonl", rows) for s in ("train", "validation", "test")}
    out = tmp_path / "run"
    result = _cli(tmp_path, "train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                  *(f"data.files.{s}={p}" for s, p in files.items()), "train.max_steps=2", "train.use_cpu=true",
                  f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    files["train"].unlink(), files["validation"].unlink()
    result = _cli(tmp_path, "eval", "--run", str(out), "--split", "test")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "test_metrics.json").read_text())["test_accuracy"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["test_accuracy"], abs=1e-9)
    missing = _cli(tmp_path, "eval", "--run", str(out), "--split", "validation")
    assert missing.returncode == 2 and "file not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr


def test_eval_of_a_file_named_like_a_split_keeps_the_runs_own_files(quickstart_run, tmp_path):
    run, _ = quickstart_run
    own = {name: (run / name).read_bytes() for name in ("metrics.json", "test_report.txt", "test_predictions.jsonl")}
    copy = tmp_path / "test.jsonl"
    shutil.copy(_recipe_files(run)["test"], copy)
    result = _cli(tmp_path, "eval", "--run", str(run), "--file", str(copy))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {name: (run / name).read_bytes() for name in own} == own
    assert (run / "test_file_metrics.json").is_file() and (run / "test_file_report.txt").is_file()


def _recipe_files(run: Path) -> dict[str, str]:
    import yaml

    return yaml.safe_load((run / "recipe.yaml").read_text())["data"]["files"]
