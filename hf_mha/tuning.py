"""Full fine-tuning and parameter-efficient methods: what trains, and how a tuned model is saved and reloaded."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .recipe import Recipe


def count_trainable(model) -> dict[str, float]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / max(total, 1)}


def check_tuning(recipe: Recipe) -> None:
    """Reject an unknown method or option before any model is loaded."""
    method = recipe.tuning.method
    if method != "full":
        raise UserError(f"tuning.method: '{method}' is not supported yet; use full")


def apply_tuning(model, recipe: Recipe):
    """Return the model to train and its trainable-parameter counts."""
    check_tuning(recipe)
    return model, count_trainable(model)


def save_tuned_model(model, recipe: Recipe, out: Path) -> None:
    model.save_pretrained(out)


def load_tuned_model(recipe: Recipe, model_dir: str | Path):
    from .tasks import get_task

    task = get_task(recipe.task)
    try:
        return task.model_class.from_pretrained(str(model_dir))
    except OSError as exc:
        raise UserError(f"cannot load the model in {model_dir}: {str(exc).splitlines()[0][:200]}") from None
