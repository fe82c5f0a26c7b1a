"""Pearson and Spearman correlation (scipy) and mean squared error as `evaluate.Metric` modules.

These are the GLUE STS-B metrics. A constant prediction vector has no defined correlation: scipy warns and
returns nan, and so do we, rather than inventing a number.
"""

from __future__ import annotations

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


class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Pearson correlation coefficient: how well a straight line relates predictions to gold scores.",
            citation=_SCIPY_CITATION,
            inputs_description=_INPUTS + "    return_pvalue: also return the two-sided p-value under key 'p-value'.\n",
            features=_FLOAT_FEATURES,
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = pearsonr(np.asarray(references, dtype=np.float64), np.asarray(predictions, dtype=np.float64))
        scores = {"pearsonr": float(result.statistic)}
        if return_pvalue:
            scores["p-value"] = float(result.pvalue)
        return scores


class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Spearman rank correlation: Pearson correlation of the ranks (ties get their mean rank), "
            "so any monotonic relation scores 1.",
            citation=_SCIPY_CITATION,
            inputs_description=_INPUTS + "    return_pvalue: also return the p-value under key 'spearmanr_pvalue'.\n",
            features=_FLOAT_FEATURES,
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = spearmanr(np.asarray(references, dtype=np.float64), np.asarray(predictions, dtype=np.float64))
        scores = {"spearmanr": float(result.statistic)}
        if return_pvalue:
            scores["spearmanr_pvalue"] = float(result.pvalue)
        return scores


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
