"""Entity-level precision/recall/F1 for tagged sequences (NER), scored by the seqeval package.

An entity counts as found only when its type and both boundaries match a gold entity exactly. The default
(conlleval-compatible) mode reads chunks leniently, e.g. a stray `I-PER` starts a PER entity; `mode="strict"`
accepts only chunks that are valid in the given `scheme`.
"""

from __future__ import annotations

import warnings

import datasets
import evaluate
import seqeval.scheme
from seqeval.metrics import accuracy_score, classification_report

_CITATION = """\
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018}
}
"""

_INPUTS = """
Args:
    predictions: one list of predicted tags per sentence, e.g. [["B-PER", "I-PER", "O"], ...].
    references: one list of gold tags per sentence, same lengths.
    suffix: True when the type comes first, as in "PER-B".
    mode: None (lenient, like conlleval) or "strict".
    scheme: the tagging scheme checked in strict mode: IOB1, IOB2, IOE1, IOE2, IOBES or BILOU (default: detected
        from the gold tags, which works for IOB2, IOE2 and IOBES).
    sample_weight: optional weight per sentence.
    zero_division: value used where a ratio is 0/0 (default 0, silently).
Returns:
    {<type>: {"precision", "recall", "f1", "number"}, ...,
     "overall_precision", "overall_recall", "overall_f1" (micro average over entities), "overall_accuracy" (tokens),
     "macro_precision", "macro_recall", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1"}
"""

SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")


def resolve_scheme(scheme, mode):
    """The seqeval scheme class named by `scheme`; None leaves strict mode to detect it from the gold tags."""
    if mode not in (None, "strict"):
        raise ValueError(f"seqeval mode must be None or 'strict', got {mode!r}")
    if scheme is None or isinstance(scheme, type):
        return scheme
    if str(scheme).upper() not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    return getattr(seqeval.scheme, str(scheme).upper())


def entity_scores(references, predictions, suffix=False, mode=None, scheme=None, sample_weight=None, zero_division=0):
    """The seqeval metric's result dict, computed from plain lists of tag lists."""
    with warnings.catch_warnings():
        # numpy's "mean of empty slice", raised only when neither input has a single entity (handled below)
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(
            references, predictions, suffix=suffix, output_dict=True, mode=mode, scheme=resolve_scheme(scheme, mode),
            sample_weight=sample_weight, zero_division=zero_division,
        )
    averages = {name: report.pop(name) for name in ("micro avg", "macro avg", "weighted avg")}
    scores = {
        entity_type: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "number": int(row["support"]),
        }
        for entity_type, row in report.items()
    }
    micro = averages["micro avg"]
    scores.update({
        "overall_precision": float(micro["precision"]),
        "overall_recall": float(micro["recall"]),
        "overall_f1": float(micro["f1-score"]),
        "overall_accuracy": float(accuracy_score(references, predictions)),
    })
    for prefix in ("macro", "weighted"):
        row = averages[f"{prefix} avg"]
        for score, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            # With no entity type at all seqeval averages an empty list to nan; 0 agrees with the micro scores.
            scores[f"{prefix}_{score}"] = float(row[key]) if report else 0.0
    return scores


class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level precision, recall and F1 per entity type and averaged (micro, macro, "
            "weighted), plus token accuracy, for IOB-style tag sequences.",
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
            }),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(
        self, predictions, references, suffix=False, mode=None, scheme=None, sample_weight=None, zero_division=0
    ):
        return entity_scores(references, predictions, suffix, mode, scheme, sample_weight, zero_division)
