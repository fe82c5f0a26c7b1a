import json

import pandas as pd
import pytest

from hf_mha.data import load_raw, read_file
from hf_mha.errors import UserError
from hf_mha.recipe import recipe_from_dict
from hf_mha.tasks import Labels, get_task

ROWS = [("good film", "pos"), ("bad film", "neg"), ("great acting", "pos"), ("dull plot", "neg")]


def _write(tmp_path, fmt: str, rows=ROWS, columns=("text", "label")):
    frame = pd.DataFrame(rows, columns=list(columns))
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "json":
        frame.to_json(path, orient="records", lines=True)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, r))) + "\n" for r in rows))
    elif fmt == "parquet":
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_each_format_reads_the_same_rows(tmp_path, fmt):
    ds = read_file(_write(tmp_path, fmt))
    assert ds["text"] == [r[0] for r in ROWS]
    assert ds["label"] == [r[1] for r in ROWS]


def test_tsv_keeps_quotes(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('sentence\tlabel\n" a quoted start \t1\nit \'s fine \t0\n')
    ds = read_file(path)
    assert ds["sentence"][0] == '" a quoted start '


def _recipe(tmp_path, **data):
    return recipe_from_dict({"data": data, "output_dir": str(tmp_path / "run")})


def test_seeded_validation_split_when_missing(tmp_path):
    rows = [(f"text {i}", "pos" if i % 2 else "neg") for i in range(50)]
    path = _write(tmp_path, "csv", rows)
    raw1 = load_raw(_recipe(tmp_path, files={"train": str(path)}, validation_fraction=0.2))
    raw2 = load_raw(_recipe(tmp_path, files={"train": str(path)}, validation_fraction=0.2))
    assert len(raw1["validation"]) == 10 and len(raw1["train"]) == 40
    assert raw1["validation"]["text"] == raw2["validation"]["text"]


def test_sample_limits(tmp_path):
    path = _write(tmp_path, "csv")
    raw = load_raw(_recipe(tmp_path, files={"train": str(path), "validation": str(path)}, max_train_samples=3, max_eval_samples=1))
    assert len(raw["train"]) == 3 and len(raw["validation"]) == 1


def test_relative_path_beside_recipe(tmp_path):
    (tmp_path / "d").mkdir()
    path = _write(tmp_path / "d", "csv")
    recipe = recipe_from_dict({"data": {"files": {"train": f"d/{path.name}", "validation": f"d/{path.name}"}}},
                              source=str(tmp_path / "recipe.yaml"))
    assert len(load_raw(recipe)["train"]) == 4


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"data.files.train: file not found"):
        load_raw(_recipe(tmp_path, files={"train": str(tmp_path / "nope.csv")}))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(UserError, match=r"holds no examples|cannot read"):
        load_raw(_recipe(tmp_path, files={"train": str(path)}))


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(UserError, match=r"cannot tell the format of .*data.xlsx from '.xlsx'; name it with data.format=csv"):
        load_raw(_recipe(tmp_path, files={"train": str(path)}))


def test_missing_column_has_hint(tmp_path):
    path = _write(tmp_path, "csv", columns=("txt", "label"))
    recipe = _recipe(tmp_path, files={"train": str(path), "validation": str(path)})
    raw = load_raw(recipe)
    with pytest.raises(UserError, match=r"column 'text' not in the train data \(did you mean 'txt'\?\)"):
        get_task("text-classification").labels(raw, recipe)


def test_string_labels_round_trip(tmp_path):
    path = _write(tmp_path, "csv")
    recipe = _recipe(tmp_path, files={"train": str(path), "validation": str(path)})
    labels = get_task("text-classification").labels(load_raw(recipe), recipe)
    assert labels.names == ["neg", "pos"]
    from transformers import BertConfig

    config = BertConfig(**labels.config_kwargs())
    assert Labels.from_config(config).names == ["neg", "pos"]
    assert config.label2id == {"neg": 0, "pos": 1}


def test_int_labels_sorted_numerically(tmp_path):
    rows = [(f"t{i}", i % 11) for i in range(22)]
    path = _write(tmp_path, "jsonl", rows)
    recipe = _recipe(tmp_path, files={"train": str(path), "validation": str(path)})
    labels = get_task("text-classification").labels(load_raw(recipe), recipe)
    assert labels.names == list(range(11))  # integers, in numeric order


def test_float_labels_mean_regression(tmp_path):
    rows = [(f"t{i}", i / 10) for i in range(10)]
    path = _write(tmp_path, "jsonl", rows)
    recipe = _recipe(tmp_path, files={"train": str(path), "validation": str(path)})
    labels = get_task("text-classification").labels(load_raw(recipe), recipe)
    assert labels.names is None and labels.problem_type == "regression"


def test_label_not_in_label_set(tmp_path):
    train = _write(tmp_path, "csv")
    (tmp_path / "v").mkdir()
    validation = _write(tmp_path / "v", "csv", [("meh", "neutral")])
    recipe = _recipe(tmp_path, files={"train": str(train), "validation": str(validation)})
    with pytest.raises(UserError, match=r"label 'neutral' in the validation split \(row 1\) is not in the label set"):
        get_task("text-classification").labels(load_raw(recipe), recipe)


def test_explicit_label_order(tmp_path):
    path = _write(tmp_path, "csv")
    recipe = _recipe(tmp_path, files={"train": str(path), "validation": str(path)}, labels=["pos", "neg"])
    assert get_task("text-classification").labels(load_raw(recipe), recipe).names == ["pos", "neg"]


def test_sentence_pairs_tokenized_as_pairs(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    rows = [("a good film", "the film is good", "yes"), ("a bad film", "the film is good", "no")]
    path = _write(tmp_path, "jsonl", rows, columns=("premise", "hypothesis", "label"))
    recipe = _recipe(tmp_path, files={"train": str(path), "validation": str(path)}, text_columns=["premise", "hypothesis"])
    task = get_task("text-classification")
    raw = load_raw(recipe)
    labels = task.labels(raw, recipe)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    features = task.preprocess(raw["train"], tokenizer, recipe, labels, training=True)
    assert features[0]["token_type_ids"].count(1) > 0
    assert features["labels"] == [labels.names.index("yes"), labels.names.index("no")]
