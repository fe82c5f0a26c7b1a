"""Pearson and Spearman correlation (scipy) and mean squared error as `evaluate.Metric` modules.

These are the GLUE STS-B metrics. A constant prediction vector has no defined correlation: scipy warns and
returns nan, and so do we, rather than inventing a number.
"""

from __future__ import annotations

from typing import Callable

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr

_SCIPY_CITATION = """\
@article{2020SciPy-NMeth,
  title={{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  author={Virtanen, Pauli and others},
  journal={Nature Methods},
  volume={17},
  pages={261--272},
  year={2020}
}
"""

# float64, not the hub's float32: a float32 round trip would already move correlations in the 7th digit.
_FLOAT_FEATURES = datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")})

_INPUTS = """
Args:
    predictions: predicted scores, one float per example.
    references: gold scores, one float per example.
"""


class _Correlation(evaluate.Metric):
    """Pearson and Spearman share inputs and options; subclasses name the score and the scipy function."""

    score_name: str
    pvalue_name: str  # the key the hub module returns the p-value under
    description: str
    statistic_fn: Callable  # scipy's pearsonr / spearmanr, wrapped in staticmethod

    def _info(self):
        return evaluate.MetricInfo(
            description=self.description,
            citation=_SCIPY_CITATION,
            inputs_description=_INPUTS + f"    return_pvalue: also return the p-value under key '{self.pvalue_name}'.\n",
            features=_FLOAT_FEATURES,
            reference_urls=[f"https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.{self.score_name}.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = type(self).statistic_fn(np.asarray(references, dtype=np.float64), np.asarray(predictions, dtype=np.float64))
        scores = {self.score_name: float(result.statistic)}
        if return_pvalue:
            scores[self.pvalue_name] = float(result.pvalue)
        return scores


class Pearsonr(_Correlation):
    score_name, pvalue_name = "pearsonr", "p-value"
    description = "Pearson correlation coefficient: how well a straight line relates predictions to gold scores."
    statistic_fn = staticmethod(pearsonr)


class Spearmanr(_Correlation):
    score_name, pvalue_name = "spearmanr", "spearmanr_pvalue"
    description = ("Spearman rank correlation: Pearson correlation of the ranks (ties get their mean rank), so any "
                   "monotonic relation scores 1.")
    statistic_fn = staticmethod(spearmanr)


class Mse(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean squared error between predicted and gold scores (root of it with squared=False).",
            citation="",
            inputs_description=_INPUTS
            + "    squared: False returns the root mean squared error (still under key 'mse', as the hub module does).\n"
            "    sample_weight: optional weight per example.\n",
            features=_FLOAT_FEATURES,
        )

    def _compute(self, predictions, references, squared=True, sample_weight=None):
        errors = np.square(np.asarray(predictions, dtype=np.float64) - np.asarray(references, dtype=np.float64))
        mse = float(np.average(errors, weights=sample_weight))
        return {"mse": mse if squared else float(np.sqrt(mse))}
