"""One module per task, every module the same shape (like PEFT's tuners).

Each task module defines `TASK`, an object with:

- `model_class`: the `AutoModelFor...` class for the task head.
- `labels(raw, recipe) -> Labels`: check columns and build the label space from the raw splits.
- `labels_from_config(config) -> Labels`: the same label space, read back from a saved model's config.
- `preprocess(ds, tokenizer, recipe, labels, training) -> Dataset`: tokenized features. Evaluation features
  may keep extra columns (offsets, example ids); Trainer drops what the model does not take.
- `collator(tokenizer, recipe)`: the data collator (dynamic padding).
- `compute_metrics(raw, features, labels, recipe) -> callable(EvalPrediction) -> dict`: used by Trainer
  during training and by `evaluate`.
- `evaluate(trainer, raw, features, labels, recipe, out_dir, prefix) -> (metrics, report)`: predict, score, write
  the split's report (`<prefix>_report.txt`) and predictions (`output_name`) into `out_dir`.
- `predict(trainer, raw, features, labels, recipe) -> list[dict]`: one JSON row per input example.

A new task is one new module registered in MODULES below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import UserError


@dataclass
class Labels:
    """The label space a model is trained on: names in id order, or none (regression, QA)."""

    names: list[str] | None
    problem_type: str | None = None

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
        }

    @classmethod
    def from_config(cls, config) -> "Labels":
        problem_type = getattr(config, "problem_type", None)
        if problem_type == "regression":
            return cls(None, problem_type)
        id2label = config.id2label
        return cls([id2label[i] for i in sorted(id2label)], problem_type)


MODULES = {
    "text-classification": "text_classification",
    "token-classification": "token_classification",
    "question-answering": "question_answering",
}


def get_task(name: str):
    if name not in MODULES:
        raise UserError(f"task '{name}' unknown; choose one of {', '.join(MODULES)}")
    return importlib.import_module(f".{MODULES[name]}", __package__).TASK


def output_name(prefix: str, name: str) -> str:
    """Files of the eval split keep plain names (predictions.jsonl); other splits get a prefix."""
    return name if prefix == "eval" else f"{prefix}_{name}"
