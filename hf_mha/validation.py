"""`mha-ft validate`: everything train checks before the first step, without training."""

from __future__ import annotations

from typing import Any

from .recipe import Recipe


def validate_recipe(recipe: Recipe) -> dict[str, Any]:
    """Raise UserError on the first problem; return a short summary of what would be trained."""
    from .data import load_raw
    from .tasks import get_task
    from .training import silence_libraries, load_tokenizer, training_arguments
    from .tuning import check_tuning

    silence_libraries()

    task = get_task(recipe.task)
    raw = load_raw(recipe)
    labels = task.labels(raw, recipe)
    metric_names = task.metric_names(recipe, labels)
    args = training_arguments(recipe, metric_names[0] if metric_names else None)
    check_tuning(recipe)
    tokenizer = load_tokenizer(recipe)
    sample = raw["train"].select(range(min(8, len(raw["train"]))))
    features = task.preprocess(sample, tokenizer, recipe, labels, training=True)
    return {
        "task": recipe.task,
        "model": f"{recipe.model.name} ({recipe.model.attention} attention, backend {recipe.model.backend})",
        "splits": ", ".join(f"{split} {len(ds):,}" for split, ds in raw.items()),
        "labels": ", ".join(labels.names) if labels.names else (labels.problem_type or "spans"),
        "tuning": recipe.tuning.method,
        "metrics": ", ".join(metric_names),
        "training": f"{args.num_train_epochs:g} epochs, batch {args.per_device_train_batch_size}, lr {args.learning_rate:g}",
        "first example tokens": len(features[0]["input_ids"]),
        "output_dir": recipe.output_dir,
    }
