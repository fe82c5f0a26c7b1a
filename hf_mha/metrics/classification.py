"""Accuracy, precision, recall, F1 and Matthews correlation as `evaluate.Metric` modules, scored by scikit-learn.

Each takes class ids (`predictions`, `references`). Like the hub modules, `config_name="multilabel"` switches the
features to one multi-hot vector per example, which scikit-learn scores as multilabel indicator arrays.
"""

from __future__ import annotations

from typing import Callable

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, matthews_corrcoef, precision_score, recall_score

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

_CLASS_INPUTS = """
Args:
    predictions: predicted class ids (one int per example; a multi-hot list per example with config "multilabel").
    references: gold class ids, same shape as predictions.
"""

_AVERAGED_INPUTS = _CLASS_INPUTS + """\
    average: "binary" (default; scores `pos_label` only), "macro", "micro", "weighted", "samples" (multilabel),
        or None for one score per class.
    pos_label: the positive class when average="binary" (default 1).
    labels: the classes to include in a multiclass average (default: those present in either input).
    sample_weight: optional weight per example.
    zero_division: value used where a ratio is 0/0 (default 0, silently, so training logs stay clean).
Returns:
    {"<metric name>": float}, or a list of floats (one per class) when average=None.
"""


def _class_features(config_name: str) -> datasets.Features:
    if config_name == "multilabel":
        one_hot = datasets.Sequence(datasets.Value("int32"))
        return datasets.Features({"predictions": one_hot, "references": one_hot})
    return datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")})


def _as_score(value):
    """Plain floats (or a list of them) so results serialise to JSON and compare with ==."""
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else [float(v) for v in value]


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of examples whose predicted class equals the gold class "
            "(exact match of the whole label set for multilabel).",
            citation=_CITATION,
            inputs_description=_CLASS_INPUTS
            + "    normalize: False returns the number of correct examples instead of the fraction.\n"
            "    sample_weight: optional weight per example.\n",
            features=_class_features(self.config_name),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}


class _AveragedScore(evaluate.Metric):
    """Precision, recall and F1 share inputs and options; subclasses name the score and the sklearn function."""

    score_name: str
    description: str
    score_fn: Callable  # sklearn's precision_score / recall_score / f1_score, wrapped in staticmethod

    def _info(self):
        return evaluate.MetricInfo(
            description=self.description,
            citation=_CITATION,
            inputs_description=_AVERAGED_INPUTS,
            features=_class_features(self.config_name),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(
        self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None, zero_division=0
    ):
        score = type(self).score_fn(
            references, predictions, labels=labels, pos_label=pos_label, average=average,
            sample_weight=sample_weight, zero_division=zero_division,
        )
        return {self.score_name: _as_score(score)}


class Precision(_AveragedScore):
    score_name = "precision"
    description = "Precision: true positives / predicted positives, per class and averaged as requested."
    score_fn = staticmethod(precision_score)


class Recall(_AveragedScore):
    score_name = "recall"
    description = "Recall: true positives / actual positives, per class and averaged as requested."
    score_fn = staticmethod(recall_score)


class F1(_AveragedScore):
    score_name = "f1"
    description = "F1: harmonic mean of precision and recall, per class and averaged as requested."
    score_fn = staticmethod(f1_score)


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Matthews correlation coefficient between predicted and gold classes: +1 perfect, 0 no "
            "better than chance, -1 total disagreement; robust to class imbalance (the GLUE CoLA metric).",
            citation=_CITATION,
            inputs_description=_CLASS_INPUTS + "    sample_weight: optional weight per example.\n",
            features=_class_features("default"),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"],
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}


class HammingLoss(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of (example, label) decisions that are wrong: 0 is perfect. With config "
            "multilabel, every label of every example counts once.",
            citation=_CITATION,
            inputs_description=_CLASS_INPUTS + "    sample_weight: optional weight per example.\n",
            features=_class_features(self.config_name),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.hamming_loss.html"],
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"hamming_loss": float(hamming_loss(references, predictions, sample_weight=sample_weight))}
