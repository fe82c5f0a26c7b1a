"""Multi-label text classification, the parts single-label does not share: reading label sets (a list per row,
a delimited string, or one 0/1 column per label), multi-hot targets, per-label decision thresholds (tuned on
validation to maximise each label's F1) and predicted label sets.

The model is the same AutoModelForSequenceClassification with problem_type multi_label_classification: one
sigmoid per label and BCE (or the weighted/focal loss of hf_mha.losses).
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from ..data import require_columns
from ..errors import UserError
from ..recipe import DataSection, Recipe
from .base import Labels

MULTI_LABEL = "multi_label_classification"
#: Thresholds tried per label when eval.tune_threshold is set.
CANDIDATES = np.round(np.arange(0.05, 0.96, 0.05), 2)


def is_multi_label(ds: Dataset, data: DataSection) -> bool:
    if data.problem_type == "multi_label" or data.label_columns or data.label_delimiter:
        return True
    if data.problem_type != "auto" or data.label_column not in ds.column_names:
        return False
    feature = ds.features[data.label_column]
    return type(feature).__name__ in ("List", "Sequence", "LargeList") or isinstance(feature, list)


def has_label_sets(ds: Dataset, data: DataSection) -> bool:
    if data.label_columns:
        return all(column in ds.column_names for column in data.label_columns)
    return data.label_column in ds.column_names


def label_sets(ds: Dataset, data: DataSection, split: str) -> list[list]:
    """Each row's labels, as a list (empty when a row has none)."""
    if data.label_columns:
        require_columns(ds, data.label_columns, split, "data.label_columns")
        columns = [ds[column][:] for column in data.label_columns]
        rows = []
        for row, values in enumerate(zip(*columns), 1):
            bad = next((v for v in values if v not in (0, 1, True, False, 0.0, 1.0)), None)
            if bad is not None:
                raise UserError(f"data.label_columns: row {row} of the {split} split holds {bad!r}; each label column "
                                "holds 0 or 1")
            rows.append([name for name, value in zip(data.label_columns, values) if value])
        return rows
    require_columns(ds, [data.label_column], split, "data.label_column")
    inner = getattr(ds.features[data.label_column], "feature", None)
    names = inner.names if hasattr(inner, "names") else None  # a list of ClassLabel ids (hub datasets)
    rows = []
    for row, value in enumerate(ds[data.label_column][:], 1):
        if names is not None and isinstance(value, list):
            value = [names[i] for i in value]
        if isinstance(value, str) and data.label_delimiter:
            value = [part.strip() for part in value.split(data.label_delimiter) if part.strip()]
        elif isinstance(value, str):
            raise UserError(f"data.label_column: row {row} of the {split} split holds the string {value!r}, not a list "
                            "of labels; for labels joined in one string set data.label_delimiter (e.g. ',')")
        if not isinstance(value, list):
            raise UserError(f"data.label_column: row {row} of the {split} split holds {value!r}; multi-label rows hold "
                            "a list of labels, a delimited string (data.label_delimiter), or use data.label_columns")
        rows.append(value)
    return rows


def multi_labels(raw, recipe: Recipe, reference: str) -> Labels:
    """The label set, in id order: data.label_columns, data.labels, or the sorted labels of the reference split;
    every split's labels checked against it."""
    data = recipe.data
    sets = {split: label_sets(ds, data, split) for split, ds in raw.items() if split == reference or has_label_sets(ds, data)}
    if data.label_columns:
        names = list(data.label_columns)
    elif data.labels:
        names = list(data.labels)
    elif hasattr(getattr(raw[reference].features.get(data.label_column), "feature", None), "names"):
        names = list(raw[reference].features[data.label_column].feature.names)
    else:
        found = {label for row in sets[reference] for label in row}
        names = sorted(found, key=lambda v: (isinstance(v, str), v))
    known = {str(name) for name in names}
    for split, rows in sets.items():
        for row, labels in enumerate(rows, 1):
            unknown = next((label for label in labels if str(label) not in known), None)
            if unknown is not None:
                raise UserError(f"data.label_column: label {unknown!r} in the {split} split (row {row}) is not in the "
                                f"label set {names}; fix the data or list every label in data.labels")
    if len(names) < 2:
        raise UserError(f"data.label_column: only {len(names)} label ({names}) in train; multi-label needs two or more")
    return Labels(names, MULTI_LABEL, [recipe.eval.threshold] * len(names))


def multi_hot(rows: list[list], labels: Labels) -> list[list[float]]:
    index = {str(name): i for i, name in enumerate(labels.names)}
    targets = []
    for row in rows:
        target = [0.0] * len(index)
        for label in row:
            target[index[str(label)]] = 1.0
        targets.append(target)
    return targets


def probabilities(logits) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))


def decide(logits, labels: Labels) -> np.ndarray:
    """0/1 per label: its probability reaches the label's threshold."""
    return (probabilities(logits) >= np.asarray(labels.thresholds)).astype(int)


def tune_thresholds(logits, gold, labels: Labels) -> list[float]:
    """Per label, the candidate threshold with the best F1 on these (validation) predictions; ties go to the one
    nearest 0.5. A label without positives here keeps its threshold."""
    probs, gold = probabilities(logits), np.asarray(gold).astype(int)
    tuned = []
    for i, current in enumerate(labels.thresholds):
        if not gold[:, i].any():
            tuned.append(current)
            continue
        best = max(CANDIDATES, key=lambda t: (_f1(probs[:, i] >= t, gold[:, i]), -abs(t - 0.5)))
        tuned.append(float(best))
    return tuned


def _f1(predicted: np.ndarray, gold: np.ndarray) -> float:
    true_positives = int((predicted & (gold == 1)).sum())
    return 2 * true_positives / max(1, int(predicted.sum()) + int(gold.sum()))


def rows(logits, labels: Labels) -> list[dict]:
    """Per example: the predicted label set and every label's probability."""
    probs, chosen = probabilities(logits), decide(logits, labels)
    return [{"predicted": [name for name, on in zip(labels.names, picks) if on],
             "probabilities": {str(name): round(float(p), 6) for name, p in zip(labels.names, row)}}
            for row, picks in zip(probs, chosen)]
