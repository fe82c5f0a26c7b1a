"""One module per task, every module the same shape (like PEFT's tuners): see `base.Task` for the interface."""

from __future__ import annotations

import importlib

from ..errors import UserError
from .base import Labels, Task, output_name

MODULES = {
    "text-classification": "text_classification",
    "token-classification": "token_classification",
    "question-answering": "question_answering",
}

__all__ = ["MODULES", "Labels", "Task", "get_task", "output_name"]


def get_task(name: str) -> Task:
    if name not in MODULES:
        raise UserError(f"task '{name}' unknown; choose one of {', '.join(MODULES)}")
    return importlib.import_module(f".{MODULES[name]}", __package__).TASK
