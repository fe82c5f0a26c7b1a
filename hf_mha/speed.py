"""CPU inference speed of finished runs, measured side by side in one process (`mha-ft compare --speed`): the
accuracy/speed frontier of a base run and its compressed students.

Each run predicts the same examples (the first run's test split, else its validation split, up to `examples`)
in batches with dynamic padding, as `mha-ft predict` does, in rounds that visit every run in turn, so that a
shared machine's load changes hit all runs alike; the median round is reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from .run_folder import load_run

#: Weights files whose size is reported, whichever the run holds.
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "bottleneck_adapters.safetensors")


def inference_speed(folders: list[Path], rounds: int = 5, examples: int = 512, batch_size: int = 32) -> list[dict]:
    """Per run: samples/s (median of `rounds`), parameters, weights file size."""
    from .data import load_split
    from .inference import load_saved

    saved = [load_saved(load_run(folder), folder) for folder in folders]
    reference = saved[0].recipe
    split = "test" if _has_split(reference, "test") else "validation"
    raw = load_split(reference, split)
    raw = raw.select(range(min(examples, len(raw))))
    batches = [_batches(model, raw, batch_size) for model in saved]
    for model in saved:
        model.model.eval()
    seconds: list[list[float]] = [[] for _ in saved]
    with torch.inference_mode():
        for model, prepared in zip(saved, batches):  # one untimed pass each: first-call allocations
            _run(model.model, prepared[:2])
        for _ in range(rounds):
            for i, (model, prepared) in enumerate(zip(saved, batches)):
                started = time.perf_counter()
                _run(model.model, prepared)
                seconds[i].append(time.perf_counter() - started)
    rows = []
    for folder, model, times in zip(folders, saved, seconds):
        weights = sum((folder / name).stat().st_size for name in WEIGHT_FILES if (folder / name).is_file())
        rows.append({"samples_per_second": len(raw) / statistics.median(times), "examples": len(raw), "split": split,
                     "parameters": sum(p.numel() for p in model.model.parameters()), "weights_bytes": weights,
                     "threads": torch.get_num_threads()})
    return rows


def _has_split(recipe, split: str) -> bool:
    files = recipe.data.files
    return bool(getattr(files, split, None)) if files is not None else bool(recipe.data.dataset and recipe.data.test_split)


def _batches(saved, raw, batch_size: int) -> list[dict]:
    features = saved.task.preprocess(raw, saved.tokenizer, saved.recipe, saved.labels, training=False)
    accepted = set(saved.tokenizer.model_input_names)
    columns = [name for name in features.column_names if name in accepted]
    collate = saved.task.collator(saved.tokenizer, saved.recipe)
    rows = features.select_columns(columns)
    return [collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            for start in range(0, len(rows), batch_size)]


def _run(model, batches: list[dict]) -> None:
    for batch in batches:
        model(**batch)
