"""End to end through the CLI on the tiny model: train -> eval -> predict, and the bad-input contract."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from conftest import mha_ft
from hf_mha_cli.main import app

runner = CliRunner()




@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    from conftest import INTENT_EXAMPLES, write_jsonl

    folder = tmp_path_factory.mktemp("e2e")
    rows = [{"text": t, "label": l} for t, l in INTENT_EXAMPLES]
    files = {s: write_jsonl(folder / f"{s}.jsonl", rows * (3 if s == "train" else 1)) for s in ("train", "validation", "test")}
    out = folder / "run"
    result = mha_ft(
        "train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
        *(f"data.files.{s}={p}" for s, p in files.items()),
        "train.num_train_epochs=3", "train.learning_rate=2e-3", "train.per_device_train_batch_size=4",
        "train.use_cpu=true", f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, files, result


def test_run_folder_contents(finished_run):
    out, _, result = finished_run
    for name in ("recipe.yaml", "metrics.json", "eval_report.txt", "predictions.jsonl", "test_report.txt",
                 "eval_confusion_matrix.png", "loss_curve.png", "env.json", "config.json", "model.safetensors"):
        assert (out / name).is_file(), name
    assert not list(out.glob("checkpoint-*")), "a finished run keeps no checkpoints by default"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_accuracy", "eval_f1_macro", "test_accuracy", "train_runtime", "train_samples_per_second",
                "trainable_params"):
        assert key in metrics, key
    assert "eval_accuracy" in result.stdout


def test_predictions_follow_the_example_order(finished_run):
    # The quickstart recipe groups training batches by length; evaluation must still keep the data's order.
    out, files, _ = finished_run
    expected = [json.loads(line)["text"] for line in files["validation"].read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == expected
    gold = [json.loads(line)["label"] for line in files["validation"].read_text().splitlines()]
    assert [row["label"] for row in rows] == gold


def test_final_model_loads_with_plain_transformers(finished_run):
    out, _, _ = finished_run
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "account", 1: "refund", 2: "status"}


def test_eval_rescoring_matches_training_metrics(finished_run):
    out, _, _ = finished_run
    result = mha_ft("eval", "--run", str(out), "--split", "test")
    assert result.returncode == 0, result.stderr
    training = json.loads((out / "metrics.json").read_text())
    rescored = json.loads((out / "test_metrics.json").read_text())
    assert rescored["test_accuracy"] == pytest.approx(training["test_accuracy"])


def test_eval_on_a_file(finished_run, tmp_path):
    out, files, _ = finished_run
    result = mha_ft("eval", "--run", str(out), "--file", str(files["validation"]))
    assert result.returncode == 0, result.stderr
    assert (out / "validation_metrics.json").is_file()


def test_predict_writes_label_and_probabilities(finished_run, tmp_path):
    out, _, _ = finished_run
    inputs = tmp_path / "new.csv"
    inputs.write_text("text\nwhere is my parcel\nreset my password\n")
    preds = tmp_path / "preds.jsonl"
    result = mha_ft("predict", "--run", str(out), "--input", str(inputs), "--output", str(preds))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["predicted"] in {"account", "refund", "status"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_finished_run_is_not_overwritten(finished_run):
    out, files, _ = finished_run
    before = (out / "metrics.json").read_bytes()
    result = mha_ft("train", "--recipe", str(out / "recipe.yaml"))
    assert result.returncode == 2
    assert "already holds a finished run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (out / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--recipe", "quickstart", "modle.name=x"], "unknown key 'modle'"),
        (["train", "--recipe", "quickstart", "train.learning_rate=fast"], "train.learning_rate must be float"),
        (["train", "--recipe", "quickstart", "data.files.train=/nonexistent/train.csv"], "file not found"),
        (["train", "--recipe", "quickstart", "data.text_columns=[body]"], "column 'body' not in the train data"),
        (["train", "--recipe", "no-such-recipe"], "neither a file nor a built-in recipe"),
        (["eval", "--run", "/nonexistent/run"], "is not a run folder"),
        (["predict", "--run", "/nonexistent", "--input", "x", "--output", "y"], "is not a run folder"),
        (["cp", "nope", "x.yaml"], "no built-in recipe 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = mha_ft(*args, f"output_dir={tmp_path / 'out'}") if args[0] == "train" else mha_ft(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_label_outside_label_set(tmp_path, tiny_model_dir, intent_files):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello", "label": "greeting"}\n')
    result = mha_ft("train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                    f"data.files.train={intent_files['train']}", f"data.files.validation={bad}",
                    f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert "label 'greeting' in the validation split (row 1)" in result.stderr


def test_empty_dataset(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    result = mha_ft("train", "--recipe", "quickstart", f"data.files.train={empty}", f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert "holds no examples" in result.stderr


def test_validate_and_ls_and_cp(tmp_path, tiny_model_dir, intent_files):
    # output_dir in tmp_path: the README has users run the quickstart (runs/quickstart here) before the tests.
    result = runner.invoke(app, ["validate", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                                 *(f"data.files.{s}={p}" for s, p in intent_files.items()),
                                 f"output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    assert "Recipe is valid" in result.output and "labels: account, refund, status" in result.output
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0 and "quickstart" in result.output
    target = tmp_path / "mine.yaml"
    result = runner.invoke(app, ["cp", "quickstart", str(target)])
    assert result.exit_code == 0
    from hf_mha.recipe import load_recipe

    copied = load_recipe(str(target))
    assert Path(copied.data.files.train).is_file()


def test_every_verb_help_has_an_example():
    import typer

    verbs = list(typer.main.get_command(app).commands)
    assert {"train", "eval", "predict", "ls", "cp", "validate", "env"} <= set(verbs)
    for verb in verbs:
        helped = runner.invoke(app, [verb, "--help"])
        assert helped.exit_code == 0
        assert "Example: mha-ft" in helped.output, verb


def test_our_attention_trains_and_saves_the_stock_layout(tmp_path, tiny_model_dir, intent_files):
    out = tmp_path / "mha"
    result = mha_ft(
        "train", "--recipe", "quickstart", f"model.name={tiny_model_dir}", "model.attention=mha",
        *(f"data.files.{s}={p}" for s, p in intent_files.items()), "train.num_train_epochs=1",
        "train.use_cpu=true", f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import torch

    # The saved model is plain transformers; swapping our attention back in reproduces its logits.
    from hf_mha.attention import swap_attention

    stock = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ours = swap_attention(AutoModelForSequenceClassification.from_pretrained(out).eval())
    batch = {"input_ids": torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])}
    with torch.no_grad():
        assert torch.allclose(stock(**batch).logits, ours(**batch).logits, atol=1e-5)
    rescored = mha_ft("eval", "--run", str(out), "--split", "test")
    assert rescored.returncode == 0, rescored.stderr[-2000:]
    trained = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "test_metrics.json").read_text())["test_accuracy"] == pytest.approx(trained["test_accuracy"])


@pytest.mark.parametrize(
    "tuning, check",
    [
        (["tuning.method=adalora", "tuning.init_r=4", "tuning.target_r=2"],
         lambda trainer: any(type(c).__name__ == "AdaLoraSchedule" for c in trainer.callback_handler.callbacks)),
        (["tuning.method=full", "tuning.layerwise_lr_decay=0.5"],
         lambda trainer: len({g["lr"] for g in trainer.optimizer_cls_and_kwargs[1]["params"]}) > 2),
    ],
    ids=["adalora-schedule", "layerwise-lr-decay"],
)
def test_tuning_hooks_reach_the_trainer(tmp_path, tiny_model_dir, intent_files, monkeypatch, tuning, check):
    from hf_mha import load_recipe, train
    from hf_mha.training import RunTrainer

    seen = {}
    original = RunTrainer.train

    def spy(self, *args, **kwargs):
        seen["ok"] = check(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunTrainer, "train", spy)
    recipe = load_recipe("quickstart", [f"model.name={tiny_model_dir}", *(f"data.files.{s}={p}" for s, p in intent_files.items()),
                                        "train.num_train_epochs=1", "train.use_cpu=true", f"output_dir={tmp_path / 'run'}", *tuning])
    train(recipe)
    assert seen["ok"]


def test_tuning_is_resolved_once_per_train(tmp_path, tiny_model_dir, intent_files, monkeypatch):
    """The tuning section is checked once, before the data loads, and the one result serves every later step."""
    from hf_mha import load_recipe, train
    from hf_mha.tuning.base import Tuning

    checks = []
    original = Tuning.__init__

    def counted(self, recipe, method, options):
        checks.append(method)
        original(self, recipe, method, options)

    monkeypatch.setattr(Tuning, "__init__", counted)
    recipe = load_recipe("quickstart", [f"model.name={tiny_model_dir}", *(f"data.files.{s}={p}" for s, p in intent_files.items()),
                                        "train.num_train_epochs=1", "train.use_cpu=true", f"output_dir={tmp_path / 'run'}",
                                        "tuning.method=lora", "tuning.r=2"])
    train(recipe)
    assert checks == ["lora"]
