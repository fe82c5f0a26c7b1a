"""Sentence and sentence-pair classification or regression (GLUE style: sentiment, topic, intent)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Value
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, EvalPrediction

from .. import fsutil
from ..data import require_columns
from ..errors import UserError, echo
from ..models import task_model
from ..recipe import Recipe
from . import long_text
from . import multi_label as ml
from .base import Labels, count_labels, output_name, reference_split, softmax

REGRESSION = "regression"


# --------------------------------------------------------------------------- columns and labels


def _column_labels(ds: Dataset, column: str) -> list:
    feature = ds.features[column]
    if hasattr(feature, "names"):  # ClassLabel: keep the dataset's own names
        return [feature.names[i] for i in ds[column]]
    return ds[column]


def _is_float_feature(ds: Dataset, column: str) -> bool:
    feature = ds.features[column]
    return isinstance(feature, Value) and feature.dtype.startswith("float")


def _check_texts(ds: Dataset, columns: list[str], split: str) -> None:
    for column in columns:
        if not any(text is not None and str(text).strip() for text in ds[column][:]):
            raise UserError(
                f"data.text_columns: every text in column '{column}' of the {split} split is empty; "
                "check data.text_columns names the column with the texts"
            )


def _check_labels_present(ds: Dataset, column: str, text_column: str, split: str) -> None:
    """Every row has a label. An empty cell in a csv column of integers makes the whole column float with NaN,
    which would otherwise read as a regression target: it is a missing label, said as one. The row's text is
    named too, since a validation split carved from train has its own row numbers."""
    for row, value in enumerate(ds[column][:], 1):
        if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip()):
            raise UserError(
                f"data.label_column: row {row} of the {split} split ({text_column} {echo(ds[row - 1][text_column], 60)}) "
                "has no label (empty); fill it in or drop the row"
            )


# --------------------------------------------------------------------------- scores


def _predicted(logits, labels: Labels) -> np.ndarray:
    logits = np.asarray(logits)
    if labels.problem_type == ml.MULTI_LABEL:
        return ml.decide(logits, labels)
    return logits.reshape(-1) if labels.names is None else logits.argmax(axis=-1)


def _gold(label_ids, labels: Labels) -> list:
    if labels.names is None:
        return [float(v) for v in np.asarray(label_ids).reshape(-1)]
    if labels.problem_type == ml.MULTI_LABEL:
        return [[name for name, on in zip(labels.names, row) if on >= 0.5] for row in np.asarray(label_ids)]
    return [labels.names[int(v)] for v in label_ids]


# --------------------------------------------------------------------------- the task


class TextClassification:
    model_class = AutoModelForSequenceClassification

    def labels(self, raw: DatasetDict, recipe: Recipe) -> Labels:
        data = recipe.data
        reference = reference_split(raw)
        multi = ml.is_multi_label(raw[reference], data)
        for split, ds in raw.items():
            require_columns(ds, data.text_columns, split, "data.text_columns")
            _check_texts(ds, data.text_columns, split)
            if not multi and (split == reference or data.label_column in ds.column_names):
                require_columns(ds, [data.label_column], split, "data.label_column")
                _check_labels_present(ds, data.label_column, data.text_columns[0], split)
        if multi:
            return ml.multi_labels(raw, recipe, reference)
        train = raw[reference]
        regression = data.problem_type == REGRESSION or (
            data.problem_type == "auto" and _is_float_feature(train, data.label_column)
        )
        if regression:
            return Labels(None, REGRESSION)
        if data.labels:
            names = list(data.labels)
        elif hasattr(train.features[data.label_column], "names"):
            names = list(train.features[data.label_column].names)
        else:
            found = set(_column_labels(train, data.label_column))
            # Integer labels stay integers (id2label, predictions and reports show 0/1, not "0"/"1").
            names = sorted(found, key=lambda v: (isinstance(v, str), v))
        if len({str(name) for name in names}) < len(names):
            raise UserError(f"data.label_column: labels {names} differ only in type (1 and \"1\"); use one type in every split")
        known = {str(name) for name in names}
        for split, ds in raw.items():
            if data.label_column not in ds.column_names:
                continue
            for row, value in enumerate(_column_labels(ds, data.label_column)):
                if value is None or str(value) not in known:
                    raise UserError(
                        f"data.label_column: label {value!r} in the {split} split (row {row + 1}) is not in the "
                        f"label set {names}; fix the data or list every label in data.labels"
                    )
        if len(names) < 2:
            raise UserError(f"data.label_column: only one label ({names}) in train; classification needs two or more")
        return Labels(names, "single_label_classification")

    def labels_from_config(self, config) -> Labels:
        return Labels.from_config(config)

    def preprocess(self, ds: Dataset, tokenizer, recipe: Recipe, labels: Labels, training: bool) -> Dataset:
        data = recipe.data
        columns = data.text_columns
        require_columns(ds, columns, "input", "data.text_columns")
        multi = labels.problem_type == ml.MULTI_LABEL
        has_labels = ml.has_label_sets(ds, data) if multi else data.label_column in ds.column_names
        targets = ml.multi_hot(ml.label_sets(ds, data, "input"), labels) if multi and has_labels else None
        label2id = {str(name): i for i, name in enumerate(labels.names or [])}  # 1 and "1" are one label

        def encode(batch, indices):
            texts = [[str(t) if t is not None else "" for t in batch[c]] for c in columns]
            if data.long_text == "truncate":
                encoded = tokenizer(*texts, truncation=True, max_length=data.max_length)
            else:
                encoded = long_text.encode(tokenizer, texts[0], indices, data)
            row_labels = None
            if targets is not None:
                row_labels = [targets[i] for i in indices]
            elif has_labels:
                values = batch[data.label_column]
                if labels.names is None:
                    row_labels = [float(v) for v in values]
                else:
                    names = ds.features[data.label_column].names if hasattr(ds.features[data.label_column], "names") else None
                    row_labels = [label2id[str(names[v]) if names else str(v)] for v in values]
            if row_labels is not None and long_text.DOCUMENT in encoded:  # a window takes its document's label
                position = {row: i for i, row in enumerate(indices)}
                encoded["labels"] = [row_labels[position[row]] for row in encoded[long_text.DOCUMENT]]
            elif row_labels is not None:
                encoded["labels"] = row_labels
            return encoded

        return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names, desc="Tokenizing")

    def label_counts(self, ds: Dataset, recipe: Recipe) -> dict | None:
        column = recipe.data.label_column
        if ml.is_multi_label(ds, recipe.data):
            return count_labels(label for row in ml.label_sets(ds, recipe.data, "input") for label in row) if ml.has_label_sets(ds, recipe.data) else None
        if column not in ds.column_names or _is_float_feature(ds, column) or recipe.data.problem_type == REGRESSION:
            return None
        return count_labels(_column_labels(ds, column))

    def token_counts(self, ds: Dataset, tokenizer, recipe: Recipe) -> list[int]:
        texts = [[str(t) if t is not None else "" for t in ds[c][:]] for c in recipe.data.text_columns]
        return [len(ids) for ids in tokenizer(*texts, truncation=False, verbose=False)["input_ids"]]

    def collator(self, tokenizer, recipe: Recipe):
        return DataCollatorWithPadding(tokenizer)

    def metric_names(self, recipe: Recipe, labels: Labels) -> list[str]:
        from ..metrics import classification_metrics, default_metric_names

        names = list(recipe.eval.metrics or default_metric_names(labels.problem_type or "single_label_classification"))
        # Score two dummy predictions now, so a typo in eval.metrics fails before training instead of after it.
        dummy = np.array([0.0, 1.0]) if labels.names is None else np.array([0, 1])
        if labels.problem_type == ml.MULTI_LABEL:
            dummy = np.eye(labels.num_labels, dtype=int)[:2]
        classification_metrics(names, dummy, dummy, num_labels=labels.num_labels,
                               problem_type=labels.problem_type or "single_label_classification")
        return names

    def compute_metrics(self, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe):
        from ..metrics import classification_metrics

        names = self.metric_names(recipe, labels)

        def compute(prediction: EvalPrediction) -> dict:
            logits, gold = _per_document(prediction.predictions, prediction.label_ids, features, recipe)
            predicted = _predicted(logits, labels)
            gold = np.asarray(gold)
            return classification_metrics(
                names, predicted, gold.astype(int) if labels.problem_type == ml.MULTI_LABEL else gold,
                num_labels=labels.num_labels,
                problem_type=labels.problem_type or "single_label_classification",
            )

        return compute

    def score(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe, out_dir: Path, prefix: str) -> tuple[dict, str]:
        from ..reports import classification_report_text, save_confusion_matrix_png

        multi = labels.problem_type == ml.MULTI_LABEL
        if multi and recipe.eval.tune_threshold and not labels.tuned and prefix == "eval":
            # Tuned on the validation split once, after training; saved with the model, used by eval and predict.
            trainer.compute_metrics = None
            output = trainer.predict(features, metric_key_prefix=prefix)
            logits, gold = _per_document(output.predictions, output.label_ids, features, recipe)
            labels.thresholds, labels.tuned = ml.tune_thresholds(logits, gold, labels), True
            task_model(trainer.model).config.label_thresholds = labels.thresholds
        trainer.compute_metrics = self.compute_metrics(raw, features, labels, recipe)
        output = trainer.predict(features, metric_key_prefix=prefix)
        metrics = dict(output.metrics)
        logits, label_ids = _per_document(output.predictions, output.label_ids, features, recipe)
        rows = self._rows(logits, raw, labels, recipe)
        if label_ids is not None:
            for row, gold in zip(rows, _gold(label_ids, labels)):
                row["label"] = gold
        report = "\n".join(f"{k}: {v:.4f}" for k, v in metrics.items() if isinstance(v, float)) + "\n"
        if labels.names and label_ids is not None:
            predicted = _predicted(logits, labels)
            gold = np.asarray(label_ids).astype(int) if multi else label_ids
            report = classification_report_text(gold, predicted, labels.names)
            if multi:
                report += "thresholds: " + ", ".join(f"{n} {t:g}" for n, t in zip(labels.names, labels.thresholds)) + "\n"
            elif out_dir is not None:
                save_confusion_matrix_png(gold, predicted, labels.names, out_dir / f"{prefix}_confusion_matrix.png")
        if out_dir is not None:
            fsutil.write_jsonl(out_dir / output_name(prefix, "predictions.jsonl"), rows)
            fsutil.write_text(out_dir / f"{prefix}_report.txt", report)
        return metrics, report

    def predict(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe) -> list[dict]:
        output = trainer.predict(features, metric_key_prefix="predict")
        return self._rows(_per_document(output.predictions, None, features, recipe)[0], raw, labels, recipe)

    def _rows(self, logits: np.ndarray, raw: Dataset, labels: Labels, recipe: Recipe) -> list[dict]:
        texts = {c: raw[c] for c in recipe.data.text_columns}
        rows = []
        if labels.names is None:
            for i, value in enumerate(np.asarray(logits).reshape(-1)):
                rows.append({**{c: texts[c][i] for c in texts}, "predicted": float(value)})
            return rows
        if labels.problem_type == ml.MULTI_LABEL:
            return [{**{c: texts[c][i] for c in texts}, **row} for i, row in enumerate(ml.rows(logits, labels))]
        probabilities = softmax(logits)
        for i, probs in enumerate(probabilities):
            rows.append({
                **{c: texts[c][i] for c in texts},
                "predicted": labels.names[int(probs.argmax())],
                "probabilities": {name: round(float(p), 6) for name, p in zip(labels.names, probs)},
            })
        return rows


def _per_document(logits, label_ids, features: Dataset, recipe: Recipe):
    """Window predictions as one per document (data.long_text: windows); others pass through."""
    if long_text.DOCUMENT not in features.column_names:
        return logits, label_ids
    return long_text.by_document(logits, label_ids, features[long_text.DOCUMENT][:], recipe.data.window_aggregation)


TASK = TextClassification()
