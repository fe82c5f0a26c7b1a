"""SQuAD v1.1 and v2.0 exact match and F1, written from the definitions published with the datasets.

Both compare a predicted answer string with every gold answer after normalisation (lower case, punctuation
removed, the articles a/an/the removed, whitespace collapsed) and keep the best match. F1 is over the bags of
normalised tokens. v2.0 adds unanswerable questions: the empty string is the "no answer" prediction, a model can
also abstain through `no_answer_probability` above a threshold, and the result reports the best threshold.
Scores are percentages (0-100), as in the official scripts.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import datasets
import evaluate

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)

_V1_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of EMNLP},
  year={2016}
}
"""

_V2_CITATION = """\
@inproceedings{rajpurkar-etal-2018-know,
  title={Know What You Don't Know: Unanswerable Questions for {SQuAD}},
  author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy},
  booktitle={Proceedings of ACL},
  year={2018}
}
"""

_ANSWERS = datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_exact(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def answer_f1(prediction: str, gold: str, *, empty_matches_empty: bool = True) -> float:
    """Token-overlap F1 of two answers after normalisation.

    v2.0 scores "no answer" as the empty string, so two empty answers match (F1 1) and an empty answer against a
    non-empty one is 0. v1.1's script has no such case and scores any pair without a shared token 0; pass
    `empty_matches_empty=False` for that.
    """
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if empty_matches_empty and (not prediction_tokens or not gold_tokens):
        return float(prediction_tokens == gold_tokens)
    shared = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision = shared / len(prediction_tokens)
    recall = shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _gold_texts(reference) -> list[str]:
    # The Sequence-of-dict feature stores answers as {"text": [...], "answer_start": [...]}.
    return list(reference["answers"]["text"])


def squad_v1_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """EM and F1 over the questions in `golds`; a question without a prediction scores 0, as in the v1.1 script."""
    if not golds:
        raise ValueError("squad: no references to score")
    exact = f1 = 0.0
    for qid, answers in golds.items():
        if qid not in predictions:
            continue
        exact += max(answer_exact(predictions[qid], gold) for gold in answers)
        f1 += max(answer_f1(predictions[qid], gold, empty_matches_empty=False) for gold in answers)
    return {"exact_match": 100.0 * exact / len(golds), "f1": 100.0 * f1 / len(golds)}


def _best_threshold(predictions, raw_scores, no_answer_probs, has_answer) -> tuple[float, float]:
    """The no-answer threshold that maximises the total score, as the v2.0 script searches for it.

    Start from abstaining on every question (all the unanswerable ones right), then answer questions in order of
    rising no-answer probability; each answered question adds its score if answerable, and costs 1 if it is
    unanswerable and the prediction is not empty. The best running total and the probability where it was
    reached are the result.
    """
    running = best = sum(1 for qid in raw_scores if not has_answer[qid])
    best_threshold = 0.0
    for qid in sorted(raw_scores, key=lambda q: no_answer_probs[q]):
        if has_answer[qid]:
            running += raw_scores[qid]
        elif predictions[qid]:
            running -= 1
        if running > best:
            best = running
            best_threshold = no_answer_probs[qid]
    return 100.0 * best / len(raw_scores), float(best_threshold)


def squad_v2_scores(
    predictions: dict[str, str],
    no_answer_probs: dict[str, float],
    golds: dict[str, list[str]],
    no_answer_threshold: float = 1.0,
) -> dict[str, float]:
    """The v2.0 result dict: overall, HasAns_ and NoAns_ EM/F1/total, and the best thresholds."""
    if not golds:
        raise ValueError("squad_v2: no references to score")
    missing = [qid for qid in golds if qid not in predictions]
    if missing:
        raise ValueError(f"squad_v2: no prediction for {len(missing)} question(s), e.g. {missing[:3]}")
    has_answer = {qid: bool(answers) for qid, answers in golds.items()}
    raw_exact, raw_f1 = {}, {}
    for qid, answers in golds.items():
        # Gold answers that normalise to nothing cannot be matched by a real answer; if none is left, only
        # "no answer" (the empty string) is right.
        answers = [a for a in answers if normalize_answer(a)] or [""]
        raw_exact[qid] = max(answer_exact(predictions[qid], gold) for gold in answers)
        raw_f1[qid] = max(answer_f1(predictions[qid], gold) for gold in answers)

    def thresholded(raw):
        return {
            qid: float(not has_answer[qid]) if no_answer_probs[qid] > no_answer_threshold else score
            for qid, score in raw.items()
        }

    exact, f1 = thresholded(raw_exact), thresholded(raw_f1)

    def summary(qids, prefix=""):
        return {
            f"{prefix}exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
            f"{prefix}f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
            f"{prefix}total": len(qids),
        }

    result = summary(list(golds))
    answerable = [q for q in golds if has_answer[q]]
    unanswerable = [q for q in golds if not has_answer[q]]
    if answerable:
        result.update(summary(answerable, "HasAns_"))
    if unanswerable:
        result.update(summary(unanswerable, "NoAns_"))
    for name, raw in (("exact", raw_exact), ("f1", raw_f1)):
        result[f"best_{name}"], result[f"best_{name}_thresh"] = _best_threshold(predictions, raw, no_answer_probs, has_answer)
    return result


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and token F1 (0-100), best over the gold answers of each question.",
            citation=_V1_CITATION,
            inputs_description="""
Args:
    predictions: [{"id": str, "prediction_text": str}, ...]
    references: [{"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}, ...]
Returns:
    {"exact_match": float, "f1": float}
""",
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                "references": {"id": datasets.Value("string"), "answers": _ANSWERS},
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        return squad_v1_scores(
            {p["id"]: p["prediction_text"] for p in predictions}, {r["id"]: _gold_texts(r) for r in references}
        )


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v2.0 exact match and F1 (0-100) with unanswerable questions: overall, answerable "
            "(HasAns_) and unanswerable (NoAns_), plus the best no-answer threshold for each.",
            citation=_V2_CITATION,
            inputs_description="""
Args:
    predictions: [{"id": str, "prediction_text": str ("" for no answer), "no_answer_probability": float}, ...]
    references: [{"id": str, "answers": {"text": [...], "answer_start": [...]}}, ...] (empty lists: unanswerable)
    no_answer_threshold: a question counts as abstained when its no_answer_probability is above this (default 1.0,
        i.e. only the empty prediction_text abstains).
Returns:
    {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1", "NoAns_total",
     "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"} (HasAns_/NoAns_ only when such questions exist)
""",
            features=datasets.Features({
                "predictions": {
                    "id": datasets.Value("string"),
                    "prediction_text": datasets.Value("string"),
                    "no_answer_probability": datasets.Value("float32"),
                },
                "references": {"id": datasets.Value("string"), "answers": _ANSWERS},
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        return squad_v2_scores(
            {p["id"]: p["prediction_text"] for p in predictions},
            {p["id"]: p["no_answer_probability"] for p in predictions},
            {r["id"]: _gold_texts(r) for r in references},
            no_answer_threshold,
        )
