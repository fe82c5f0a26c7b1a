"""The interface every task module implements, and what the tasks share.

A task module (text_classification.py, token_classification.py, question_answering.py) defines `TASK`, an object
with the methods of `Task`, and keeps the same sections in the same order: reading the task's columns, labels,
features, scores, then the task class. A new task is one new module registered in `hf_mha.tasks.MODULES`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from datasets import Dataset, DatasetDict

from ..recipe import Recipe


@dataclass
class Labels:
    """The label space a model is trained on: names in id order, or none (regression, QA)."""

    names: list[str] | None
    problem_type: str | None = None
    thresholds: list[float] | None = None  # multi-label: one decision threshold per label
    tuned: bool = False  # thresholds fixed (read from a saved model, or tuned on validation)

    @property
    def num_labels(self) -> int:
        return len(self.names) if self.names else 1

    def config_kwargs(self) -> dict:
        if not self.names:
            return {"num_labels": 1, "problem_type": self.problem_type} if self.problem_type else {}
        return {
            "num_labels": len(self.names),
            "id2label": dict(enumerate(self.names)),
            "label2id": {name: i for i, name in enumerate(self.names)},
            **({"problem_type": self.problem_type} if self.problem_type else {}),
            **({"label_thresholds": list(self.thresholds)} if self.thresholds else {}),
        }

    @classmethod
    def from_config(cls, config) -> "Labels":
        problem_type = getattr(config, "problem_type", None)
        if problem_type == "regression":
            return cls(None, problem_type)
        id2label = config.id2label
        thresholds = getattr(config, "label_thresholds", None)
        return cls([id2label[i] for i in sorted(id2label)], problem_type, thresholds, tuned=thresholds is not None)


def reference_split(raw) -> str:
    """The split that sets the label space and must carry labels: train when training; the one split being scored
    when `eval` checks a split or a file against a trained model."""
    return "train" if "train" in raw else next(iter(raw))


class Task(Protocol):
    """What training, evaluation and prediction ask of a task."""

    model_class: type
    """The `AutoModelFor...` class for the task head."""

    def labels(self, raw: DatasetDict, recipe: Recipe) -> Labels:
        """Check the columns of every split and build the label space from `reference_split(raw)` (raises
        UserError on bad data)."""

    def labels_from_config(self, config) -> Labels:
        """The same label space, read back from a saved model's config."""

    def preprocess(self, ds: Dataset, tokenizer, recipe: Recipe, labels: Labels, training: bool) -> Dataset:
        """Tokenized features. Evaluation features may keep extra columns (offsets, word or example ids); the
        Trainer drops what the model does not take."""

    def label_counts(self, ds: Dataset, recipe: Recipe) -> dict | None:
        """How often each label (class, tag, or answered/unanswerable) occurs in a split; None without labels."""

    def token_counts(self, ds: Dataset, tokenizer, recipe: Recipe) -> list[int] | None:
        """Each example's length in tokens before truncation, for the truncation share `validate` reports; None
        when long inputs are split into windows rather than cut."""

    def collator(self, tokenizer, recipe: Recipe) -> Callable:
        """The data collator (dynamic padding)."""

    def metric_names(self, recipe: Recipe, labels: Labels) -> list[str]:
        """The metrics reported, the first one choosing the best checkpoint; raises UserError on an unknown one."""

    def compute_metrics(self, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe) -> Callable:
        """The Trainer's compute_metrics(EvalPrediction) -> {name: float} on the validation split."""

    def score(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe,
              out_dir: Path | None, prefix: str) -> tuple[dict[str, Any], str]:
        """Predict a labelled split, score it, and write its report (`<prefix>_report.txt`) and predictions
        (`output_name(prefix, ...)`) into `out_dir` (None: write nothing); returns metrics and the report text."""

    def predict(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe) -> list[dict]:
        """One JSON row per input example."""


def count_labels(values) -> dict:
    """How often each value occurs, most frequent first (ties by name), for the per-split label counts."""
    return dict(sorted(Counter(values).items(), key=lambda item: (-item[1], str(item[0]))))


def output_name(prefix: str, name: str) -> str:
    """Files of the eval split keep plain names (predictions.jsonl); other splits get a prefix."""
    return name if prefix == "eval" else f"{prefix}_{name}"


def softmax(scores, axis: int = -1) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)
