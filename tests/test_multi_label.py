"""Multi-label text classification: label sets from lists, delimited strings or 0/1 columns; BCE; micro/macro/
weighted/samples F1, subset accuracy and Hamming loss; per-label thresholds, tuned on validation and used by
eval and predict."""

import json

import pytest
from typer.testing import CliRunner

from conftest import INTENT_EXAMPLES, write_jsonl
from hf_mha.data import load_raw
from hf_mha.errors import UserError
from hf_mha.recipe import load_recipe
from hf_mha.tasks import get_task
from hf_mha_cli.main import app

runner = CliRunner()
TASK = get_task("text-classification")


def tags(text: str, intent: str) -> list[str]:
    """An intent plus 'order' when the text is about an order: several labels per row, some rows with one."""
    return [intent, *(["order"] if any(w in text for w in ("order", "parcel", "package")) else [])]


ROWS = [{"text": text, "labels": tags(text, intent)} for text, intent in INTENT_EXAMPLES]


@pytest.fixture
def multi_files(tmp_path):
    return {"train": write_jsonl(tmp_path / "train.jsonl", ROWS * 3), "validation": write_jsonl(tmp_path / "val.jsonl", ROWS),
            "test": write_jsonl(tmp_path / "test.jsonl", ROWS[::2])}


def args(model, files, out, *extra):
    return ["--recipe", "quickstart", f"model.name={model}", *(f"data.files.{s}={p}" for s, p in files.items()),
            "data.label_column=labels", "eval.metrics=null", "train.use_cpu=true", "train.num_train_epochs=3",
            "train.learning_rate=5e-3", "train.per_device_train_batch_size=8", f"output_dir={out}", *extra]


def test_lists_of_labels_train_eval_and_predict(tiny_model_dir, multi_files, tmp_path):
    out = tmp_path / "run"
    # with BCE pos_weight from the label counts, and focal
    result = runner.invoke(app, ["train", *args(tiny_model_dir, multi_files, out, "train.class_weights=balanced", "train.loss=focal")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("f1_micro", "f1_macro", "f1_weighted", "f1_samples", "subset_accuracy", "hamming_loss"):
        assert 0 <= metrics[f"eval_{name}"] <= 1 and f"test_{name}" in metrics
    report = (out / "eval_report.txt").read_text()
    assert all(label in report for label in ("account", "order", "refund", "status")) and "samples avg" in report
    assert "thresholds: account 0.5, order 0.5, refund 0.5, status 0.5" in report
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["label_thresholds"] == [0.5] * 4
    row = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert isinstance(row["predicted"], list) and row["label"] == ["order", "status"]  # "where is my order", in id order
    assert set(row["probabilities"]) == {"account", "order", "refund", "status"}
    assert row["predicted"] == [k for k, p in row["probabilities"].items() if p >= 0.5]

    rescored = runner.invoke(app, ["eval", "--run", str(out)])
    assert rescored.exit_code == 0, rescored.output
    assert json.loads((out / "eval_metrics.json").read_text())["eval_f1_micro"] == pytest.approx(metrics["eval_f1_micro"])
    inputs = write_jsonl(tmp_path / "new.jsonl", [{"text": "where is my order"}, {"text": "reset my password"}])
    predicted = runner.invoke(app, ["predict", "--run", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(isinstance(line["predicted"], list) for line in lines)


def test_tuned_thresholds_are_saved_and_used_by_predict(tiny_model_dir, multi_files, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *args(tiny_model_dir, multi_files, out, "eval.tune_threshold=true",
                                                "train.num_train_epochs=1", "train.learning_rate=1e-3")])
    assert result.exit_code == 0, result.output
    thresholds = json.loads((out / "config.json").read_text())["label_thresholds"]
    assert len(thresholds) == 4 and thresholds != [0.5] * 4  # one epoch at a low rate: 0.5 is far from the best
    inputs = write_jsonl(tmp_path / "new.jsonl", [{"text": t} for t, _ in INTENT_EXAMPLES])
    assert runner.invoke(app, ["predict", "--run", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl")]).exit_code == 0
    names = ["account", "order", "refund", "status"]
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row["predicted"] == [n for n, t in zip(names, thresholds) if row["probabilities"][n] >= t]


def test_delimited_strings_and_label_columns_read_as_label_sets(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("text,tags\nwhere is my order,status|order\nreset my password,account\nrefund it,refund|order\n")
    recipe = load_recipe("quickstart", [f"data.files.train={csv}", f"data.files.validation={csv}", "data.files.test=null",
                                        "data.label_column=tags", "data.label_delimiter=|"])
    labels = TASK.labels(load_raw(recipe), recipe)
    assert labels.names == ["account", "order", "refund", "status"] and labels.problem_type == "multi_label_classification"
    wide = tmp_path / "wide.csv"
    wide.write_text("text,status,order,refund\nwhere is my order,1,1,0\nrefund it,0,1,1\nhi,0,0,0\n")
    recipe = load_recipe("quickstart", [f"data.files.train={wide}", f"data.files.validation={wide}", "data.files.test=null",
                                        "data.label_columns=[status, order, refund]"])
    labels = TASK.labels(load_raw(recipe), recipe)
    assert labels.names == ["status", "order", "refund"]
    assert TASK.label_counts(load_raw(recipe)["train"], recipe) == {"order": 2, "refund": 1, "status": 1}


@pytest.mark.parametrize("rows, extra, message", [
    ([{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": ["y"]}], ["validation=[{'text': 'c', 'labels': ['z']}]"],
     "label 'z' in the validation split (row 1) is not in the label set"),
    ([{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": ["y"]}], ["eval.threshold=1.5"],
     "eval.threshold: Input should be less than 1"),
    ([{"text": "a", "labels": "x,y"}, {"text": "b", "labels": "y"}], ["data.problem_type=multi_label"],
     "for labels joined in one string set data.label_delimiter"),
])
def test_bad_multi_label_input_is_one_line(tmp_path, rows, extra, message):
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    overrides = [f"data.files.train={train}", f"data.files.validation={train}", "data.files.test=null", "data.label_column=labels"]
    for item in extra:
        if item.startswith("validation="):
            overrides[1] = f"data.files.validation={write_jsonl(tmp_path / 'v.jsonl', eval(item.split('=', 1)[1]))}"
        else:
            overrides.append(item)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recipe = load_recipe("quickstart", overrides)
        TASK.labels(load_raw(recipe), recipe)


def test_multi_label_with_lora_and_our_attention_exports(tiny_model_dir, multi_files, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *args(tiny_model_dir, multi_files, out, "tuning.method=lora", "model.attention=mha",
                                                "train.max_steps=2", "eval.tune_threshold=true")])
    assert result.exit_code == 0, result.output
    assert (out / "adapter_model.safetensors").is_file()
    tuned = json.loads((out / "config.json").read_text())["label_thresholds"]
    exported = runner.invoke(app, ["export", "--run", str(out), "--out", str(tmp_path / "plain")])
    assert exported.exit_code == 0, exported.output
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["label_thresholds"] == tuned


def test_validate_counts_each_label_of_a_set(tiny_model_dir, multi_files, tmp_path):
    result = runner.invoke(app, ["validate", *args(tiny_model_dir, multi_files, tmp_path / "run")])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "train: 36 examples; labels account: 12, order: 12, refund: 12, status: 12" in flat
