"""Offline metrics built on `evaluate`.

`evaluate.load("accuracy")` downloads the metric's script from the Hugging Face Hub, so it fails without the
internet. The modules here are real `evaluate.Metric` subclasses (same `add_batch`/`compute`, same feature
checks, same distributed options) defined in this package, so they load with no network:

    from hf_mha.metrics import load_metric
    f1 = load_metric("f1")
    f1.add_batch(predictions=[0, 1], references=[0, 0])
    f1.compute(average="macro")

Names we do not ship fall back to `evaluate.load` (a local metric script, evaluate's module cache, or the hub).
`classification_metrics` is the flat `{name: float}` scorer the training loop calls.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable, Iterator

import evaluate
import numpy as np

from ..errors import UserError, did_you_mean
from .classification import F1, Accuracy, HammingLoss, MatthewsCorrelation, Precision, Recall
from .entities import Seqeval
from .regression import Mse, Pearsonr, Spearmanr
from .squad import Squad, SquadV2

BUILTIN_METRICS: dict[str, type[evaluate.Metric]] = {
    "accuracy": Accuracy,
    "precision": Precision,
    "recall": Recall,
    "f1": F1,
    "matthews_correlation": MatthewsCorrelation,
    "hamming_loss": HammingLoss,
    "pearsonr": Pearsonr,
    "spearmanr": Spearmanr,
    "mse": Mse,
    "seqeval": Seqeval,
    "squad": Squad,
    "squad_v2": SquadV2,
}

ALIASES = {"mcc": "matthews_correlation", "pearson": "pearsonr", "spearman": "spearmanr"}

# Names `classification_metrics` scores itself, beyond plain `load_metric` names.
_AVERAGES = ("macro", "micro", "weighted")
_CLASS_SCORES = {"precision": Precision, "recall": Recall, "f1": F1}
CLASSIFICATION_NAMES = (
    "accuracy",
    *(f"{score}{suffix}" for score in _CLASS_SCORES for suffix in ("", *(f"_{a}" for a in _AVERAGES))),
    "mcc",
)
#: Multi-label only: per-example averages, exact match of the whole label set, and the share of wrong decisions.
MULTI_LABEL_NAMES = (*(f"{score}_samples" for score in _CLASS_SCORES), "subset_accuracy", "hamming_loss")
REGRESSION_NAMES = ("pearson", "spearman", "mse")

_DEFAULTS = {
    "single_label_classification": ["accuracy", "f1", "mcc"],
    "multi_label_classification": ["f1_micro", "f1_macro", "f1_weighted", "f1_samples", "subset_accuracy", "hamming_loss"],
    "regression": ["pearson", "spearman", "mse"],
}

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE")


#: Scores where lower is better (errors and losses); every other metric is maximised.
LOWER_IS_BETTER = ("mse", "hamming_loss", "loss")


def greater_is_better(name: str) -> bool:
    """Whether a larger value of the metric `name` (with or without the eval_ prefix) is the better model."""
    return not name.removeprefix("eval_").endswith(LOWER_IS_BETTER)


def default_metric_names(problem_type: str) -> list[str]:
    """The metrics reported when a recipe lists none (classification: accuracy, f1, mcc; regression: pearson,
    spearman, mse)."""
    if problem_type not in _DEFAULTS:
        raise ValueError(f"no default metrics for problem type {problem_type!r}; known: {', '.join(_DEFAULTS)}")
    return list(_DEFAULTS[problem_type])


def _builtin_key(name: str) -> str | None:
    key = name.strip().lower().replace("-", "_").removeprefix("evaluate_metric/")
    key = ALIASES.get(key, key)
    return key if key in BUILTIN_METRICS else None


def _unknown_metric(name: str, extra_names: Iterable[str] = ()) -> UserError:
    known = list(dict.fromkeys([*extra_names, *BUILTIN_METRICS, *ALIASES]))
    hint = did_you_mean(name.lower(), known)
    return UserError(
        f"metric {name!r} is not available offline{hint}; built-in metrics: {', '.join(known)}. Other names are "
        "fetched from the Hugging Face Hub by evaluate.load, which needs the internet (or give the path to a local "
        "metric script)"
    )


def _offline_requested() -> bool:
    return any(os.environ.get(var, "").upper() in {"1", "ON", "YES", "TRUE"} for var in _OFFLINE_ENV)


@contextmanager
def _evaluate_offline_if_requested() -> Iterator[None]:
    """Make evaluate honour HF_HUB_OFFLINE / HF_DATASETS_OFFLINE too.

    evaluate 0.4.6 only reads HF_EVALUATE_OFFLINE (once, at import); with the other variables set it still tries
    the hub (a request per module type, each with a 10 s timeout on a network that drops packets).
    """
    previous = evaluate.config.HF_EVALUATE_OFFLINE
    evaluate.config.HF_EVALUATE_OFFLINE = previous or _offline_requested()
    try:
        yield
    finally:
        evaluate.config.HF_EVALUATE_OFFLINE = previous


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """Our offline module for `name` (or an alias: mcc, pearson, spearman), else whatever `evaluate.load` finds.

    `kwargs` go to the module's constructor (config_name, keep_in_memory, num_process, process_id, experiment_id,
    cache_dir, ...), exactly as `evaluate.load` passes them on.
    """
    return _load(name, kwargs)


def _load(name: str, kwargs: dict, usable_names: Iterable[str] = ()) -> evaluate.EvaluationModule:
    key = _builtin_key(name)
    if key is not None:
        return BUILTIN_METRICS[key](**kwargs)
    try:
        with _evaluate_offline_if_requested():
            return evaluate.load(name, **kwargs)
    except ImportError as error:  # the script's own requirements are missing (evaluate names them)
        raise UserError(f"metric {name!r} could not be imported: {error}") from None
    except OSError:  # FileNotFoundError and ConnectionError: neither local, cached nor reachable
        raise _unknown_metric(name, usable_names) from None


def _class_module(cls: type[evaluate.Metric], multilabel: bool) -> evaluate.Metric:
    # In memory: nothing to share between processes here (Trainer already gathered), and no arrow files or locks
    # under ~/.cache for concurrent runs to trip over.
    return cls(config_name="multilabel" if multilabel else None, keep_in_memory=True)


def _flatten(name: str, result: dict) -> dict[str, float]:
    """A foreign module's result as `{name: score}`, or `{name_key: score}` when it returns several numbers."""
    numbers = {k: v for k, v in result.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}
    if len(numbers) == 1:
        return {name: float(next(iter(numbers.values())))}
    return {name if key == name else f"{name}_{key}": float(value) for key, value in numbers.items()}


def classification_metrics(
    names: Iterable[str],
    predictions,
    references,
    num_labels: int | None = None,
    problem_type: str = "single_label_classification",
) -> dict[str, float]:
    """Score class ids (or regression values) with each named metric; a flat `{name: float}` for Trainer logs.

    Names: accuracy; f1, precision, recall (binary for two classes, else macro) and their _macro, _micro,
    _weighted variants; mcc; pearson, spearman, mse; or any other `load_metric` name taking plain
    predictions/references. `num_labels` decides binary vs macro; without it the largest id seen decides.
    """
    if problem_type not in _DEFAULTS:
        raise ValueError(f"unknown problem type {problem_type!r}; known: {', '.join(_DEFAULTS)}")
    regression = problem_type == "regression"
    multilabel = problem_type == "multi_label_classification"
    predictions, references = np.asarray(predictions), np.asarray(references)
    if regression:
        predictions, references = predictions.reshape(-1), references.reshape(-1)
    if multilabel:
        num_classes = predictions.shape[-1]
    else:
        num_classes = num_labels or int(max(predictions.max(initial=0), references.max(initial=0))) + 1
    default_average = "binary" if num_classes <= 2 and not multilabel else "macro"

    inputs = {"predictions": predictions, "references": references}
    results: dict[str, float] = {}
    for name in names:
        score, _, average = name.partition("_")
        if regression and name in CLASSIFICATION_NAMES:
            raise UserError(
                f"eval.metrics: {name!r} scores class labels but this task is regression; "
                f"use {', '.join(REGRESSION_NAMES)}"
            )
        if name in MULTI_LABEL_NAMES and not multilabel:
            raise UserError(f"eval.metrics: {name!r} is for multi-label classification; use {', '.join(CLASSIFICATION_NAMES)}")
        if name in ("accuracy", "subset_accuracy"):  # of a multi-label set: exact match of the whole set
            results[name] = _class_module(Accuracy, multilabel).compute(**inputs)["accuracy"]
        elif name == "hamming_loss":
            results[name] = _class_module(HammingLoss, multilabel).compute(**inputs)["hamming_loss"]
        elif score in _CLASS_SCORES and average in ("", *_AVERAGES, "samples"):
            module = _class_module(_CLASS_SCORES[score], multilabel)
            results[name] = module.compute(**inputs, average=average or default_average)[score]
        elif name == "mcc":
            if multilabel:
                raise UserError("eval.metrics: 'mcc' is not defined for multi-label classification; use f1_micro")
            results[name] = _class_module(MatthewsCorrelation, False).compute(**inputs)["matthews_correlation"]
        elif name in REGRESSION_NAMES:
            module = load_metric(name, keep_in_memory=True)
            results[name] = next(iter(module.compute(**inputs).values()))
        else:
            results.update(_score_with_loaded(name, predictions, references))
    return results


def _score_with_loaded(name: str, predictions, references) -> dict[str, float]:
    module = _load(name, {"keep_in_memory": True}, [*CLASSIFICATION_NAMES, *REGRESSION_NAMES])
    try:
        result = module.compute(predictions=predictions, references=references)
    except (ValueError, KeyError) as error:  # evaluate's feature check: it wants other inputs (tags, answers...)
        reason = str(error).splitlines()[0]
        raise UserError(
            f"eval.metrics: metric {name!r} cannot score these predictions ({reason}); pick another metric"
        ) from None
    return _flatten(name, result)


__all__ = [
    "ALIASES",
    "BUILTIN_METRICS",
    "CLASSIFICATION_NAMES",
    "MULTI_LABEL_NAMES",
    "REGRESSION_NAMES",
    "Accuracy",
    "F1",
    "MatthewsCorrelation",
    "Mse",
    "Pearsonr",
    "Precision",
    "Recall",
    "Seqeval",
    "Spearmanr",
    "Squad",
    "SquadV2",
    "classification_metrics",
    "default_metric_names",
    "load_metric",
]
