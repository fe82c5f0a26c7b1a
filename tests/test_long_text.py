"""Long documents in text classification: truncate, head_tail, and windows scored once per document."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import INTENT_EXAMPLES, write_jsonl
from hf_mha.errors import UserError
from hf_mha.recipe import load_recipe
from hf_mha.tasks.long_text import by_document, encode
from hf_mha_cli.main import app

runner = CliRunner()


def long_rows(copies: int = 6):
    """Documents of 6 same-label sentences: far over a 16-token max_length."""
    by_label = {}
    for text, label in INTENT_EXAMPLES:
        by_label.setdefault(label, []).append(text)
    return [{"text": " . ".join(texts * 2)[: 60 * (1 + i % 3) * 4], "label": label}
            for label, texts in by_label.items() for i in range(copies)]


def test_by_document_means_or_maxes_windows_in_document_order():
    logits = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [2.0, 2.0]])
    documents = [7, 7, 3, 7]
    pooled, labels = by_document(logits, np.array([1, 1, 0, 1]), documents, "mean")
    assert pooled.tolist() == [[2.0, 4 / 3], [0.0, 5.0]] and labels.tolist() == [1, 0]
    pooled, _ = by_document(logits, None, documents, "max")
    assert pooled.tolist() == [[3.0, 2.0], [0.0, 5.0]]


def test_head_tail_keeps_the_start_and_the_end(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = " ".join(["where"] * 3 + ["order"] * 40 + ["refund"] * 20)
    data = load_recipe("quickstart", ["data.long_text=head_tail", "data.max_length=22"]).data
    ids = encode(tokenizer, [text], [0], data)["input_ids"][0]
    words = tokenizer.convert_ids_to_tokens(ids)
    assert len(ids) == 22 and words[1:4] == ["where"] * 3 and words[-16:-1] == ["refund"] * 15


def test_windows_train_and_score_each_document_once(tiny_model_dir, tmp_path):
    rows = long_rows()
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", rows) for split in ("train", "validation", "test")}
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                                 *(f"data.files.{s}={p}" for s, p in files.items()), "data.max_length=16",
                                 "data.long_text=windows", "data.stride=4", "train.max_steps=3", "train.use_cpu=true",
                                 f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == len(rows)  # one per document, not per window
    assert [json.loads(p)["text"] for p in predictions] == [r["text"] for r in rows]
    report = (out / "eval_report.txt").read_text()
    assert f"{len(rows)}" in report.split("accuracy")[1].split("\n")[0]  # the support counts documents
    metrics = json.loads((out / "metrics.json").read_text())
    rescored = runner.invoke(app, ["eval", "--run", str(out)])
    assert rescored.exit_code == 0, rescored.output
    assert json.loads((out / "eval_metrics.json").read_text())["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    inputs = write_jsonl(tmp_path / "new.jsonl", rows[:2])
    predicted = runner.invoke(app, ["predict", "--run", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl")])
    assert predicted.exit_code == 0 and len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("overrides, message", [
    (["data.long_text=windows", "data.max_length=64", "data.stride=64"], "data.stride: 64 must be less than half"),
    (["data.long_text=windows", "data.text_columns=[a, b]"], "data.long_text: windows cuts one text"),
    (["data.long_text=sliding"], "data.long_text: Input should be 'truncate', 'head_tail' or 'windows'"),
])
def test_bad_long_text_options(overrides, message):
    with pytest.raises(UserError, match=message):
        load_recipe("quickstart", overrides)


def test_hub_splits_beyond_the_three_are_not_read(monkeypatch):
    """IMDB has train, test and an unlabelled 'unsupervised' split; the recipe scores test as validation."""
    from datasets import Dataset, DatasetDict

    from hf_mha.data import load_raw, splits

    split = Dataset.from_dict({"text": ["a b", "c d"], "label": [0, 1]})
    unlabelled = Dataset.from_dict({"text": ["e"], "label": [-1]})
    monkeypatch.setattr(splits, "load_hub", lambda data: DatasetDict(train=split, test=split, unsupervised=unlabelled))
    raw = load_raw(load_recipe("imdb-long-docs"))
    assert sorted(raw) == ["train", "validation"] and len(raw["validation"]) == 2
