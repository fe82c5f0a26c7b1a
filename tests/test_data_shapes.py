"""Data in the shapes users bring: CoNLL with whitespace separators and comments, headerless tables, a format
named for any file name, integer labels, and what `validate` reports and warns about the data."""

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import INTENT_EXAMPLES, build_tiny_bert, write_jsonl
from hf_mha.data import read_conll, read_file
from hf_mha.errors import UserError
from hf_mha.recipe import load_recipe
from hf_mha_cli.main import app

runner = CliRunner()

SENTENCES = [
    [("John", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("London", "B-LOC")],
    [("Acme", "B-ORG"), ("rejects", "O"), ("Paris", "B-LOC")],
    [("Mary", "B-PER"), ("likes", "O"), ("Berlin", "B-LOC"), (".", "O")],
]


def conll(separator: str, copies: int = 4) -> str:
    """CoNLL text of SENTENCES (repeated), tab-separated columns, `separator` between sentences."""
    blocks = ["".join(f"{word}\t{tag}\n" for word, tag in sentence) for sentence in SENTENCES * copies]
    return separator.join(blocks)


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory) -> Path:
    words = " ".join(word for sentence in SENTENCES for word, _ in sentence)
    return build_tiny_bert(tmp_path_factory.mktemp("shapes-bert"), words)


def ner_args(model: Path, train: Path, out: Path, *extra: str) -> list[str]:
    return ["--recipe", "conll2003-full", f"model.name={model}", f"data.files.train={train}",
            f"data.files.validation={train}", f"data.files.test={train}", "data.max_length=16",
            f"output_dir={out}", *extra]


def split_counts(output: str) -> dict[str, int]:
    return {split: int(n.replace(",", "")) for split, n in re.findall(r"^(train|validation|test): ([\d,]+) examples", output, re.M)}


# --------------------------------------------------------------------------- CoNLL


def test_conll_comment_lines_are_skipped_but_a_hash_word_is_kept(tmp_path):
    text = ("# converted by tool x\n# sent_id = 1\nJohn\tB-PER\n#\tO\n\n"
            "# sent_id = 2\n#hashtag\tO\nParis\tB-LOC\n# a comment inside\n")
    path = tmp_path / "x.iob2"
    path.write_text(text)
    ds = read_conll(path)
    assert ds["tokens"] == [["John", "#"], ["#hashtag", "Paris"]]
    assert ds["ner_tags"] == [["B-PER", "O"], ["O", "B-LOC"]]


def test_tab_separated_conll_trains_with_the_sentence_count_of_the_blank_separated_file(tmp_path, ner_model):
    blank = tmp_path / "blank.conll"
    blank.write_text(conll("\n"))
    tabbed = tmp_path / "x.annotated"  # no known extension: data.format names it
    tabbed.write_text(conll("\t\n"))
    validated = runner.invoke(app, ["validate", *ner_args(ner_model, blank, tmp_path / "a")])
    assert validated.exit_code == 0, validated.output
    assert split_counts(validated.output) == {"train": 12, "validation": 12, "test": 12}

    refused = runner.invoke(app, ["validate", *ner_args(ner_model, tabbed, tmp_path / "b")])
    assert isinstance(refused.exception, UserError) and "name it with data.format=" in str(refused.exception)
    args = ner_args(ner_model, tabbed, tmp_path / "b", "data.format=conll")
    validated = runner.invoke(app, ["validate", *args])
    assert validated.exit_code == 0, validated.output
    assert split_counts(validated.output) == {"train": 12, "validation": 12, "test": 12}
    trained = runner.invoke(app, ["train", *args, "train.max_steps=2", "train.use_cpu=true"])
    assert trained.exit_code == 0, trained.output
    assert len((tmp_path / "b" / "predictions.conll").read_text().strip().split("\n\n")) == 12
    saved = yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())["data"]
    assert saved["format"] == "conll" and saved["dataset"] is None  # the files replaced the hub dataset


def test_validate_warns_when_conll_sentences_look_merged(tmp_path, ner_model, caplog):
    merged = tmp_path / "merged.conll"
    merged.write_text("".join(f"{word}\t{tag}\n" for sentence in SENTENCES * 40 for word, tag in sentence))
    result = runner.invoke(app, ["validate", *ner_args(ner_model, merged, tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert any("sentences average 440 words; are the blank lines between sentences missing?" in m for m in caplog.messages)


# --------------------------------------------------------------------------- tables


def headerless_tsv(path: Path, rows) -> Path:
    path.write_text("".join(f"{text}\t{label}\n" for text, label in rows))
    return path


@pytest.fixture
def int_label_rows():
    labels = {label: i for i, label in enumerate(sorted({label for _, label in INTENT_EXAMPLES}))}
    return [(text, labels[label]) for text, label in INTENT_EXAMPLES]


def test_headerless_tsv_trains_and_integer_labels_stay_integers(tmp_path, tiny_model_dir, int_label_rows):
    train = headerless_tsv(tmp_path / "train.tsv", int_label_rows * 2)
    validation = headerless_tsv(tmp_path / "dev.tsv", int_label_rows)
    out = tmp_path / "run"
    args = ["--recipe", "sst2-full", f"model.name={tiny_model_dir}", f"data.files.train={train}",
            f"data.files.validation={validation}", "data.header=false", "data.column_names=[sentence, label]",
            "data.max_length=32", "eval.metrics=[accuracy, f1_macro]", f"output_dir={out}"]
    validated = runner.invoke(app, ["validate", *args])
    assert validated.exit_code == 0, validated.output
    assert "labels: 0, 1, 2" in validated.output
    assert split_counts(validated.output) == {"train": len(int_label_rows) * 2, "validation": len(int_label_rows)}
    trained = runner.invoke(app, ["train", *args, "train.max_steps=2", "train.use_cpu=true"])
    assert trained.exit_code == 0, trained.output
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": 0, "1": 1, "2": 2}
    row = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert isinstance(row["predicted"], int) and isinstance(row["label"], int)
    assert set(row["probabilities"]) == {"0", "1", "2"}  # JSON object keys are strings
    saved = yaml.safe_load((out / "recipe.yaml").read_text())["data"]
    assert saved["dataset"] is None and saved["header"] is False and saved["column_names"] == ["sentence", "label"]

    # eval reads the split through the same recipe: headerless, integer labels
    result = runner.invoke(app, ["eval", "--run", str(out)])
    assert result.exit_code == 0, result.output


def test_a_header_that_looks_like_data_hints_at_header_false(tmp_path, int_label_rows):
    train = headerless_tsv(tmp_path / "train.tsv", [("a stirring , funny and finally transporting re-imagining of it", 1),
                                                      *int_label_rows])
    recipe = load_recipe("sst2-full", [f"data.files.train={train}", f"output_dir={tmp_path / 'run'}"])
    from hf_mha.data import load_raw
    from hf_mha.tasks import get_task

    with pytest.raises(UserError, match=r"column 'sentence' not in the train data.*the file seems to have no header row: "
                                         r"read it with data.header=false data.column_names=\[col1, col2\]"):
        get_task("text-classification").labels(load_raw(recipe), recipe)


def test_column_names_must_name_every_column(tmp_path, int_label_rows):
    train = headerless_tsv(tmp_path / "train.tsv", int_label_rows)
    recipe = load_recipe("sst2-full", [f"data.files.train={train}", "data.header=false", "data.column_names=[sentence]"])
    with pytest.raises(UserError, match=r"data.column_names: 1 name \(sentence\) but .*train.tsv:1 has 2 columns"):
        read_file(train, "data.files.train", recipe.data)


@pytest.mark.parametrize("overrides, message", [
    (["data.header=false"], "data.header: false needs data.column_names"),
    (["data.column_names=[a, b]"], "set data.header=false"),
    (["data.format=xlsx"], "data.format: Input should be 'auto', 'csv'"),
])
def test_table_options_are_checked_with_the_recipe(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_recipe("sst2-full", overrides)


def test_format_names_any_file_for_predict(tmp_path):
    inputs = write_jsonl(tmp_path / "inputs.data", [{"text": "hello"}])
    assert read_file(inputs, "--input", fmt="jsonl")["text"] == ["hello"]
    with pytest.raises(UserError, match=r"--input: cannot tell the format of .*inputs.data from '.data'; name it with --format="):
        read_file(inputs, "--input", fmt="auto")
    with pytest.raises(UserError, match=r"--format: unknown format 'xml'; use auto"):
        read_file(inputs, "--input", fmt="xml")


# --------------------------------------------------------------------------- what validate reports


@pytest.fixture
def quickstart_args(tiny_model_dir, intent_files, tmp_path):
    return ["--recipe", "quickstart", f"model.name={tiny_model_dir}",
            *(f"data.files.{s}={p}" for s, p in intent_files.items()), f"output_dir={tmp_path / 'run'}"]


def test_validate_reports_counts_labels_and_truncation(quickstart_args, caplog):
    result = runner.invoke(app, ["validate", *quickstart_args])
    assert result.exit_code == 0, result.output
    counts = split_counts(result.output)
    assert counts == {"train": len(INTENT_EXAMPLES) * 2, "validation": len(INTENT_EXAMPLES), "test": (len(INTENT_EXAMPLES) + 1) // 2}
    flat = " ".join(result.output.split())  # rich wraps long lines
    assert "train: 24 examples; labels account: 8, refund: 8, status: 8; 0.0% over max_length 64" in flat
    assert not [r for r in caplog.records if r.name == "hf_mha"]


def test_validate_warns_when_thirty_percent_are_over_max_length(tmp_path, tiny_model_dir, caplog):
    short = [{"text": "hi there", "label": label} for label in ("a", "b")] * 7
    long = [{"text": " ".join(["refund my order please"] * 10), "label": label} for label in ("a", "b")] * 3
    rows = short + long  # 6 of 20 examples (30 %) are longer than 16 tokens
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    args = ["--recipe", "quickstart", f"model.name={tiny_model_dir}", f"data.files.train={data}",
            f"data.files.validation={data}", "data.files.test=null", "data.max_length=16", f"output_dir={tmp_path / 'run'}"]
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 0, result.output
    warning = "data.max_length: 30% of train, 30% of validation examples are longer than 16 tokens and will be cut"
    assert [m for m in caplog.messages if m.startswith(warning)]
    assert "30.0% over max_length 16" in result.output
    caplog.clear()  # train prints the same warnings before it starts
    trained = runner.invoke(app, ["train", *args, "train.max_steps=1", "train.use_cpu=true"])
    assert trained.exit_code == 0, trained.output
    assert [m for m in caplog.messages if m.startswith(warning)]


def test_validate_warns_on_labels_and_a_low_peft_learning_rate(tmp_path, tiny_model_dir, intent_files, caplog):
    rows = [{"text": t, "label": label} for t, label in INTENT_EXAMPLES]
    validation = write_jsonl(tmp_path / "v.jsonl", rows + [{"text": "hello", "label": "greeting "}])
    labels = sorted({label for _, label in INTENT_EXAMPLES}) + ["greeting "]
    result = runner.invoke(app, [
        "validate", "--recipe", "quickstart", f"model.name={tiny_model_dir}", f"data.files.train={intent_files['train']}",
        f"data.files.validation={validation}", "data.files.test=null", f"data.labels={json.dumps(labels)}",
        "tuning.method=lora", "train.learning_rate=5e-5", f"output_dir={tmp_path / 'run'}",
    ])
    assert result.exit_code == 0, result.output
    warnings = "\n".join(caplog.messages)
    assert "label 'greeting ' in the validation split has leading or trailing whitespace" in warnings
    assert "label 'greeting ' in the validation split never occurs in train" in warnings
    assert "train.learning_rate: 5e-05 is below the usual range for lora" in warnings


# --------------------------------------------------------------------------- ls


def test_ls_fits_eighty_columns_without_cutting_a_name(monkeypatch):
    from hf_mha.recipe import builtin_recipes
    from hf_mha_cli import main

    monkeypatch.setattr(main.console, "width", 80)
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    names = {line.split()[0] for line in lines if line.strip() and not line.startswith((" " * 4, "─"))}
    assert set(builtin_recipes()) <= names
    assert "sentence-transformers/all-MiniLM-L6-v2" in result.output


def test_token_classification_trains_with_class_weights_and_focal_loss(tmp_path, ner_model):
    train = tmp_path / "train.conll"
    train.write_text(conll("\n"))
    result = runner.invoke(app, ["train", *ner_args(ner_model, train, tmp_path / "run", "train.class_weights=balanced",
                                                     "train.loss=focal", "train.max_steps=2", "train.use_cpu=true")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_loss"] > 0
