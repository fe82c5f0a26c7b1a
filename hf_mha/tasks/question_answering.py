"""Extractive question answering (SQuAD v1.1 / v2.0): find the answer as a span of the context.

A context longer than `data.max_length` is cut into windows that overlap by `data.doc_stride` tokens; every
window is a feature. Training labels each window with the answer's first and last token, or with the CLS token
when the answer is not inside it (or the question has none). Predictions pick, over all windows of a question,
the best-scoring span of at most `data.max_answer_length` tokens among the `data.n_best_size` best starts and
ends; SQuAD v2.0 answers "no answer" when the CLS score beats that span by more than
`data.null_score_diff_threshold`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import AutoModelForQuestionAnswering

from .. import fsutil
from ..data import require_columns
from ..console import warn
from ..errors import UserError, echo
from ..recipe import DataSection, Recipe
from ..reports import squad_report_text
from .base import Labels, output_name, reference_split, softmax

METRICS = ("f1", "exact_match")
#: The share of answers whose answer_start may miss their text before the data is refused.
OFFSET_TOLERANCE = 0.01
V2_METRICS = ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1")


# --------------------------------------------------------------------------- columns and labels


def question_ids(ds: Dataset) -> list[str]:
    """The `id` column, or row numbers for inputs without ids."""
    # Here and below, ds[column][:] reads a lazy datasets Column in one go rather than row by row.
    return [str(i) for i in ds["id"][:]] if "id" in ds.column_names else [str(i) for i in range(len(ds))]


def answers_of(ds: Dataset, split: str) -> list[dict]:
    """Each row's answers as {"text": [...], "answer_start": [...]} (the hub's layout), also from the list of
    {"text", "answer_start"} objects that SQuAD-style JSON lines often hold."""
    rows = []
    for row, answers in enumerate(ds["answers"][:], 1):
        if isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
            answers = {"text": [a.get("text") for a in answers], "answer_start": [a.get("answer_start") for a in answers]}
        texts = answers.get("text") if isinstance(answers, dict) else None
        starts = answers.get("answer_start") if isinstance(answers, dict) else None
        if not (isinstance(texts, list) and isinstance(starts, list) and len(texts) == len(starts)
                and all(isinstance(t, str) for t in texts) and all(isinstance(s, int) for s in starts)):
            raise UserError(
                f"data: answers of row {row} in the {split} split are {answers!r}; give {{\"text\": [..], "
                "\"answer_start\": [..]}} (character offsets into the context), empty lists for no answer"
            )
        rows.append({"text": texts, "answer_start": starts})
    return rows


def check_answer_offsets(ds: Dataset, answers: list[dict], split: str) -> None:
    """Each answer's text must stand in its context at answer_start. A few misses (hand-made data, an edited
    context) are a warning, since they train on the wrong span; more than OFFSET_TOLERANCE of the answers mean
    the offsets are not character offsets into these contexts, and the data is refused."""
    wrong = total = 0
    first = None
    for example_id, context, gold in zip(question_ids(ds), ds["context"][:], answers):
        for text, start in zip(gold["text"], gold["answer_start"]):
            total += 1
            found = context[start:start + len(text)] if start >= 0 else ""
            if found != text:
                wrong += 1
                first = first or (example_id, text, start, found)
    if not wrong:
        return
    example_id, text, start, found = first
    message = (f"{wrong:,} of {total:,} answers in the {split} split are not where answer_start says (first: "
               f"question {example_id!r}, answer {echo(text, 60)} at character {start}, where the context has "
               f"{echo(found, 60)})")
    if wrong > OFFSET_TOLERANCE * total:
        raise UserError(f"data: {message}; answer_start is the answer's character offset in its context: fix the offsets")
    warn(f"data: {message}; those answers train on the wrong span")


def _has_unanswerable(ds: Dataset, split: str) -> bool:
    return "answers" in ds.column_names and any(not a["text"] for a in answers_of(ds, split))


def with_null_answers(recipe: Recipe, ds: Dataset, split: str) -> bool:
    """SQuAD v2.0 behaviour: as the recipe says, else whether these questions include unanswerable ones."""
    if recipe.data.version_2_with_negative is not None:
        return recipe.data.version_2_with_negative
    return _has_unanswerable(ds, split)


# --------------------------------------------------------------------------- features


def fit_questions(questions: list[str], tokenizer, data: DataSection) -> list[str]:
    """Questions cut to leave every window more than `doc_stride` context tokens: the tokenizer cannot make
    overlapping windows otherwise. Leading spaces go too (some SQuAD v2.0 questions start with dozens)."""
    budget = data.max_length - tokenizer.num_special_tokens_to_add(pair=True) - data.doc_stride - 1
    if budget < 1:
        raise UserError(
            f"data.doc_stride ({data.doc_stride}) leaves no room for the question in data.max_length "
            f"({data.max_length}); lower data.doc_stride (a quarter to a third of max_length is usual)"
        )
    questions = [q.lstrip() for q in questions]
    offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [q if len(o) <= budget else q[:o[budget - 1][1]] for q, o in zip(questions, offsets)]


def answer_positions(sequence_ids, offsets, answers: dict, context_index: int, cls_index: int) -> tuple[int, int]:
    """First and last token of the first gold answer in this window; the CLS token when it is not inside."""
    if not answers["text"]:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context = [i for i, s in enumerate(sequence_ids) if s == context_index]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return cls_index, cls_index
    start = next(i for i in reversed(context) if offsets[i][0] <= start_char)
    end = next(i for i in context if offsets[i][1] >= end_char)
    return start, end


# --------------------------------------------------------------------------- scores


def postprocess(ids, contexts, features, start_logits, end_logits, data: DataSection, with_null: bool) -> dict[str, dict]:
    """The answer to each question: {"text", "answer_start" (character, -1 for none), "probability",
    "no_answer_probability"}, the best span over all its windows.

    `start_logits`/`end_logits` have one row per feature, in feature order, padded on the right (Trainer pads
    batches of different lengths with -100); positions past a feature's own length are never read.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    windows = defaultdict(list)
    for feature, example_id in enumerate(features["example_id"][:]):
        windows[example_id].append(feature)
    offset_rows, cls_indices = features["offset_mapping"][:], features["cls_index"][:]
    answers = {}
    for example_id, context in zip(ids, contexts):
        scores, spans, null_score = [], [], math.inf
        for feature in windows[example_id]:
            offsets = offset_rows[feature]
            start, end = start_logits[feature, :len(offsets)], end_logits[feature, :len(offsets)]
            cls = cls_indices[feature]
            # The smallest null score over the windows, as the SQuAD v2.0 reference post-processing keeps it.
            null_score = min(null_score, float(start[cls] + end[cls]))
            in_context = np.array([o is not None for o in offsets])
            starts = np.argsort(start)[::-1][:data.n_best_size]
            ends = np.argsort(end)[::-1][:data.n_best_size]
            length = ends[None, :] - starts[:, None] + 1
            valid = in_context[starts][:, None] & in_context[ends][None, :] & (length >= 1) & (length <= data.max_answer_length)
            pair_scores = (start[starts][:, None] + end[ends][None, :]).ravel()
            kept = np.flatnonzero(valid.ravel())
            for k in kept[np.argsort(pair_scores[kept])[::-1][:data.n_best_size]]:
                i, j = divmod(int(k), len(ends))
                scores.append(float(pair_scores[k]))
                spans.append((offsets[starts[i]][0], offsets[ends[j]][1]))
        order = np.argsort(scores)[::-1][:data.n_best_size]
        candidates = [scores[k] for k in order] + ([null_score] if with_null and math.isfinite(null_score) else [])
        probabilities = softmax(candidates) if candidates else np.array([])
        null_probability = float(probabilities[-1]) if with_null and len(candidates) > len(order) else 0.0
        if len(order) and not (with_null and null_score - scores[order[0]] > data.null_score_diff_threshold):
            first, last = spans[order[0]]
            answers[example_id] = {"text": context[first:last], "answer_start": first,
                                   "probability": float(probabilities[0]), "no_answer_probability": null_probability}
        else:
            answers[example_id] = {"text": "", "answer_start": -1,
                                   "probability": null_probability if with_null else 0.0, "no_answer_probability": null_probability}
    return answers


def squad_scores(answers: dict[str, dict], ids: list[str], golds: list[dict], with_null: bool) -> dict[str, float]:
    """EM/F1 (0-100) with our offline squad / squad_v2 modules; v2.0 adds HasAns_/NoAns_ and best thresholds."""
    from ..metrics import load_metric

    references = [{"id": i, "answers": gold} for i, gold in zip(ids, golds)]
    if not with_null:
        predictions = [{"id": i, "prediction_text": answers[i]["text"]} for i in ids]
        return load_metric("squad", keep_in_memory=True).compute(predictions=predictions, references=references)
    predictions = [
        {"id": i, "prediction_text": answers[i]["text"], "no_answer_probability": answers[i]["no_answer_probability"]}
        for i in ids
    ]
    result = load_metric("squad_v2", keep_in_memory=True).compute(predictions=predictions, references=references)
    scores = {"exact_match": result.pop("exact"), "f1": result.pop("f1")}
    return scores | {k: v for k, v in result.items() if not k.endswith("total")}


# --------------------------------------------------------------------------- the task


class QuestionAnswering:
    model_class = AutoModelForQuestionAnswering

    def labels(self, raw, recipe: Recipe) -> Labels:
        """Spans have no label set; this checks the columns and settles SQuAD v1.1 vs v2.0 behaviour."""
        for split, ds in raw.items():  # every split is learned from or scored: all need answers
            require_columns(ds, ["question", "context", "answers"], split, "data (question answering)")
            check_answer_offsets(ds, answers_of(ds, split), split)
            ids = question_ids(ds)
            if len(set(ids)) != len(ids):
                duplicate = next(i for i in ids if ids.count(i) > 1)
                raise UserError(f"data: question id {duplicate!r} appears twice in the {split} split; ids must be unique")
        if recipe.data.version_2_with_negative is None:
            reference = reference_split(raw)
            recipe.data.version_2_with_negative = _has_unanswerable(raw[reference], reference)
        if not recipe.data.version_2_with_negative:
            for split, ds in raw.items():
                if _has_unanswerable(ds, split):
                    raise UserError(
                        f"data: the {split} split has questions without an answer (SQuAD v2.0 style) but "
                        "data.version_2_with_negative is false; set it to true"
                    )
        return Labels(None)

    def labels_from_config(self, config) -> Labels:
        return Labels(None)

    def label_counts(self, ds: Dataset, recipe: Recipe) -> dict | None:
        if "answers" not in ds.column_names:
            return None
        answered = sum(bool(a["text"]) for a in answers_of(ds, "input"))
        return {"answered": answered, "unanswerable": len(ds) - answered}

    def token_counts(self, ds: Dataset, tokenizer, recipe: Recipe) -> None:
        return None  # a long context is cut into doc_stride windows, not truncated

    def preprocess(self, ds: Dataset, tokenizer, recipe: Recipe, labels: Labels, training: bool) -> Dataset:
        data = recipe.data
        # Question first, context second, except for tokenizers that pad on the left (XLNet-style).
        question_first = tokenizer.padding_side == "right"
        context_index = 1 if question_first else 0
        questions = fit_questions(ds["question"][:], tokenizer, data)
        contexts = ds["context"][:]
        ids = question_ids(ds)
        answers = answers_of(ds, "input") if "answers" in ds.column_names else None

        def encode(batch, indices):
            batch_questions = [questions[i] for i in indices]
            batch_contexts = [contexts[i] for i in indices]
            try:
                encoded = tokenizer(
                    batch_questions if question_first else batch_contexts,
                    batch_contexts if question_first else batch_questions,
                    truncation="only_second" if question_first else "only_first",
                    max_length=data.max_length, stride=data.doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True,
                )
            except Exception as exc:  # the Rust tokenizer raises a bare Exception for windows it cannot make
                raise UserError(f"data.max_length/data.doc_stride: cannot cut contexts into windows: {exc}") from None
            sample_of = encoded.pop("overflow_to_sample_mapping")
            offset_rows = encoded.pop("offset_mapping")
            features = {key: values for key, values in encoded.items()}
            for key in ("start_positions", "end_positions", *(() if training else ("example_id", "offset_mapping", "cls_index"))):
                features[key] = []
            for row, offsets in enumerate(offset_rows):
                example = indices[sample_of[row]]
                sequence_ids = encoded.sequence_ids(row)
                tokens = encoded["input_ids"][row]
                cls = tokens.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in tokens else 0
                if answers is not None:
                    first, last = answer_positions(sequence_ids, offsets, answers[example], context_index, cls)
                    features["start_positions"].append(first)
                    features["end_positions"].append(last)
                if not training:
                    features["example_id"].append(ids[example])
                    features["cls_index"].append(cls)
                    features["offset_mapping"].append(
                        [list(o) if sequence_ids[k] == context_index else None for k, o in enumerate(offsets)]
                    )
            if answers is None:  # inputs to predict: nothing to learn from, and Trainer then skips the loss
                del features["start_positions"], features["end_positions"]
            return features

        return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names, desc="Tokenizing")

    def collator(self, tokenizer, recipe: Recipe):
        # Logits are matched to offsets by position, so padding goes after the tokens whatever the tokenizer's side.
        return partial(tokenizer.pad, padding=True, padding_side="right", return_tensors="pt")

    def metric_names(self, recipe: Recipe, labels: Labels) -> list[str]:
        known = [*METRICS, *V2_METRICS] if recipe.data.version_2_with_negative is not False else list(METRICS)
        for name in recipe.eval.metrics or []:
            if name not in known:
                raise UserError(f"eval.metrics: '{name}' is not a question-answering metric; choose from {', '.join(known)}")
        return list(recipe.eval.metrics or METRICS)

    def compute_metrics(self, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe):
        """Scores for Trainer's evaluation during training. The eval features carry start/end positions so that
        Trainer calls this at all (it skips compute_metrics without label_ids); the scores use the raw answers."""
        ids, contexts = question_ids(raw), raw["context"][:]
        golds = answers_of(raw, "validation")
        with_null = with_null_answers(recipe, raw, "validation")

        def compute(prediction) -> dict:
            start_logits, end_logits = prediction.predictions[:2]
            answers = postprocess(ids, contexts, features, start_logits, end_logits, recipe.data, with_null)
            return squad_scores(answers, ids, golds, with_null)

        return compute

    def score(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe, out_dir: Path | None, prefix: str) -> tuple[dict, str]:
        trainer.compute_metrics = None  # scored here, once, from the answers we also write
        output = trainer.predict(features, metric_key_prefix=prefix)
        answers = self._answers(output, raw, features, recipe, prefix)
        ids, golds = question_ids(raw), answers_of(raw, prefix)
        with_null = with_null_answers(recipe, raw, prefix)
        scores = squad_scores(answers, ids, golds, with_null)
        metrics = {f"{prefix}_{k}": v for k, v in scores.items()} | output.metrics
        report = squad_report_text(scores, golds, with_null)
        if out_dir is not None:
            fsutil.write_json(out_dir / output_name(prefix, "predictions.json"), {i: answers[i]["text"] for i in ids})
            fsutil.write_text(out_dir / f"{prefix}_report.txt", report)
        return metrics, report

    def predict(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe) -> list[dict]:
        output = trainer.predict(features, metric_key_prefix="predict")
        answers = self._answers(output, raw, features, recipe, "input")
        with_null = with_null_answers(recipe, raw, "input")
        rows = []
        for example_id, question in zip(question_ids(raw), raw["question"][:]):
            answer = answers[example_id]
            row = {"id": example_id, "question": question, "answer": answer["text"],
                   "answer_start": answer["answer_start"], "probability": round(answer["probability"], 6)}
            if with_null:
                row["no_answer_probability"] = round(answer["no_answer_probability"], 6)
            rows.append(row)
        return rows

    def _answers(self, output, raw: Dataset, features: Dataset, recipe: Recipe, split: str) -> dict[str, dict]:
        start_logits, end_logits = output.predictions[:2]
        return postprocess(
            question_ids(raw), raw["context"][:], features, start_logits, end_logits, recipe.data,
            with_null_answers(recipe, raw, split),
        )


TASK = QuestionAnswering()
