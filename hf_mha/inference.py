"""Evaluate and predict with a trained model: a run folder (or an export with a recipe) in, scores or
predictions out. Reads only what it scores: `eval --split test` needs the test file, not the training data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fsutil
from .console import print_results, say
from .data import TABULAR, load_split, read_inputs
from .errors import UserError
from .models import load_tokenizer, use_attention
from .recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict
from .run_folder import load_run
from .tasks import Labels, Task, get_task
from .training import RunTrainer, inference_arguments, silence_libraries
from .tuning import load_tuned_model

#: Output prefixes of the splits `mha-ft train` scores; `eval --file` outputs never take one of these names.
SPLIT_PREFIXES = ("eval", "test", "train")


@dataclass
class SavedModel:
    """A trained model loaded for inference, with what evaluating and predicting on it need."""

    recipe: Recipe
    task: Task
    labels: Labels
    tokenizer: Any
    model: Any


def load_saved(recipe: Recipe, model_dir: str | Path, attention: str | None = None) -> SavedModel:
    """The model in `model_dir` (a run folder or an export), with our attention when `attention` (default: the
    recipe's) is `mha`."""
    silence_libraries()
    task = get_task(recipe.task)
    tokenizer = load_tokenizer(recipe, str(model_dir))
    model = use_attention(load_tuned_model(recipe, model_dir), attention or recipe.model.attention, recipe.model.backend)
    return SavedModel(recipe, task, task.labels_from_config(model.config), tokenizer, model)


def _trainer(saved: SavedModel, out_dir: Path) -> RunTrainer:
    return RunTrainer(
        model=saved.model, args=inference_arguments(saved.recipe, out_dir), processing_class=saved.tokenizer,
        data_collator=saved.task.collator(saved.tokenizer, saved.recipe),
    )


def file_prefix(file: str) -> str:
    """The output prefix for `eval --file F`: the file's name less a data-format extension (validation.jsonl ->
    validation, eng.testb -> eng_testb), with `_file` added where it would be the prefix of a split that training
    scored (a file named test.jsonl must not replace the run's own test_* files)."""
    path = Path(file)
    prefix = (path.stem if path.suffix.lower()[1:] in TABULAR else path.name).replace(".", "_")
    return f"{prefix}_file" if prefix in SPLIT_PREFIXES else prefix


def evaluate_run(run: str | None = None, model: str | None = None, recipe_name: str | None = None,
                 split: str = "validation", file: str | None = None, file_format: str = "auto",
                 overrides: list[str] | None = None, console=None) -> dict[str, float]:
    """Score a finished run (or a model folder with a recipe) on a split of the recipe's data or on a file."""
    silence_libraries()  # before the data is read: `datasets` draws a bar per file it reads
    if run:
        recipe = load_run(run)
        if overrides:
            recipe = recipe_from_dict(
                apply_overrides(recipe.model_dump(mode="json", exclude={"source"}), overrides), recipe.source
            )
        model_dir, out_dir = Path(run), Path(run)
    elif model and recipe_name:
        recipe = load_recipe(recipe_name, overrides)
        model_dir, out_dir = Path(model), Path(recipe.output_dir)
    else:
        raise UserError("eval: give --run DIR, or --model DIR with --recipe R")
    if file:
        raw_split, prefix, where = read_inputs(file, "--file", file_format), file_prefix(file), Path(file).name
    else:
        raw_split, prefix, where = load_split(recipe, split), {"validation": "eval"}.get(split, split), split
    saved = load_saved(recipe, model_dir)
    check_labels(saved, raw_split, where)
    features = saved.task.preprocess(raw_split, saved.tokenizer, recipe, saved.labels, training=False)
    trainer = _trainer(saved, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, report = saved.task.score(trainer, raw_split, features, saved.labels, recipe, out_dir, prefix)
    fsutil.write_json(out_dir / f"{prefix}_metrics.json", metrics)
    print_results(console, metrics, {prefix: report}, out_dir)
    return metrics


def check_labels(saved: SavedModel, raw_split, where: str) -> None:
    """The split (named `where` in messages) must have gold labels, all from the label set the model was trained
    on."""
    recipe, labels = saved.recipe, saved.labels
    problem_type = "regression" if labels.problem_type == "regression" else recipe.data.problem_type
    data = recipe.data.model_copy(update={"labels": labels.names, "problem_type": problem_type})
    saved.task.labels({where: raw_split}, recipe.model_copy(update={"data": data}))


def check_output_file(output: str, input_file: str, run: str | Path) -> Path:
    """Where `predict` may write: not its input, not a folder, not a file of the run, somewhere writable."""
    path = Path(output).expanduser().absolute()
    if path.exists() and path.is_dir():
        raise UserError(f"--output: {output} is a folder; give a file name, e.g. {Path(output) / 'predictions.jsonl'}")
    if path.exists() and path.resolve() == Path(input_file).resolve():
        raise UserError(f"--output: {output} is the --input file; write the predictions to another file")
    if path.exists() and path.resolve().is_relative_to(Path(run).resolve()):
        raise UserError(f"--output: {output} is a file of the run {run}; write the predictions outside the run folder")
    parent = fsutil.nearest_existing(path.parent)
    if not fsutil.can_write_in(parent):
        raise UserError(f"--output: cannot write in {parent} (permission denied); choose another --output")
    return path


def predict(run: str, input_file: str, output_file: str, input_format: str = "auto", console=None) -> int:
    """Write one JSON line per input example: the predicted label and the probabilities."""
    silence_libraries()
    recipe = load_run(run)
    output = check_output_file(output_file, input_file, run)
    raw = read_inputs(input_file, "--input", input_format)
    saved = load_saved(recipe, run)
    features = saved.task.preprocess(raw, saved.tokenizer, recipe, saved.labels, training=False)
    rows = saved.task.predict(_trainer(saved, Path(run)), raw, features, saved.labels, recipe)
    fsutil.write_jsonl(output, rows)
    say(console, f"Wrote {len(rows):,} predictions to {output_file}")
    return len(rows)
