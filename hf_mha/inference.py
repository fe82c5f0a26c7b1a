"""Evaluate and predict with a trained model: a run folder (or an export) in, scores or predictions out. Reads
only what it scores: `eval --split test` needs the test file, not the training data.

An export folder (`--model`) brings its run's recipe.yaml, or takes `--recipe`. One that holds `model.onnx`
(`export --format onnx`) runs through onnxruntime, wrapped as a torch module (`onnx_export.OnnxModel`) so that
the same Trainer-based code scores and predicts; `--int8` picks its `model.int8.onnx`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fsutil
from .console import print_results, say
from .data import TABULAR, load_split, read_inputs
from .errors import UserError
from .models import load_tokenizer, use_attention
from .onnx_export import load_onnx, onnx_file
from .recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict
from .run_folder import RECIPE_FILE, load_run
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


def load_saved(recipe: Recipe, model_dir: str | Path, attention: str | None = None, int8: bool = False) -> SavedModel:
    """The model in `model_dir` (a run folder or an export), with our attention when `attention` (default: the
    recipe's) is `mha`; an ONNX export's graph (the int8 one with `int8`) as it is."""
    silence_libraries()
    task = get_task(recipe.task)
    tokenizer = load_tokenizer(recipe, str(model_dir))
    graph = onnx_file(model_dir, int8)
    if graph is not None:
        model = load_onnx(graph)
    else:
        model = use_attention(load_tuned_model(recipe, model_dir), attention or recipe.model.attention,
                              recipe.model.backend)
    return SavedModel(recipe, task, task.labels_from_config(model.config), tokenizer, model)


def metrics_of(saved: SavedModel, raw_split, features, out_dir: Path) -> dict[str, float]:
    """The metrics `eval` reports for `saved` on a labelled split (prefix eval_), writing no file."""
    return saved.task.score(_trainer(saved, out_dir), raw_split, features, saved.labels, saved.recipe, None, "eval")[0]


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


def model_source(command: str, run: str | None, model: str | None, recipe_name: str | None,
                 overrides: list[str] | None = None) -> tuple[Recipe, Path, Path]:
    """The recipe, the model folder and the folder outputs go to, for `--run DIR` or `--model DIR [--recipe R]`.
    A run and an export that brings its recipe keep their outputs; with `--recipe`, they go to its output_dir."""
    if run and model:
        raise UserError(f"{command}: give --run DIR or --model DIR, not both")
    if run:
        recipe = load_run(run)
        if overrides:
            recipe = recipe_from_dict(
                apply_overrides(recipe.model_dump(mode="json", exclude={"source"}), overrides), recipe.source
            )
        return recipe, Path(run), Path(run)
    if model and not Path(model).is_dir():
        raise UserError(f"--model: {model} is not a folder; give a folder that mha-ft export wrote")
    if model and recipe_name:
        recipe = load_recipe(recipe_name, overrides)
        return recipe, Path(model), Path(recipe.output_dir)
    if model and (Path(model) / RECIPE_FILE).is_file():
        return load_recipe(str(Path(model) / RECIPE_FILE), overrides), Path(model), Path(model)
    if model:
        raise UserError(f"--model: {model} holds no {RECIPE_FILE}; add --recipe R (the recipe it was trained with), "
                        f"or export the run with mha-ft export, which copies its recipe")
    raise UserError(f"{command}: give --run DIR, or --model DIR with --recipe R (an mha-ft export needs no --recipe)")


def evaluate_run(run: str | None = None, model: str | None = None, recipe_name: str | None = None,
                 split: str = "validation", file: str | None = None, file_format: str = "auto",
                 overrides: list[str] | None = None, console=None, int8: bool = False) -> dict[str, float]:
    """Score a finished run (or a model folder: an export, or any with a recipe) on a split of the recipe's data or
    on a file."""
    silence_libraries()  # before the data is read: `datasets` draws a bar per file it reads
    recipe, model_dir, out_dir = model_source("eval", run, model, recipe_name, overrides)
    if file:
        raw_split, prefix, where = read_inputs(file, "--file", file_format), file_prefix(file), Path(file).name
    else:
        raw_split, prefix, where = load_split(recipe, split), {"validation": "eval"}.get(split, split), split
    saved = load_saved(recipe, model_dir, int8=int8)
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


def check_output_file(output: str, input_file: str, run: str | Path, what: str = "run") -> Path:
    """Where `predict` may write: not its input, not a folder, not a file of the run (`what`: or model folder),
    somewhere writable."""
    path = Path(output).expanduser().absolute()
    if path.exists() and path.is_dir():
        raise UserError(f"--output: {output} is a folder; give a file name, e.g. {Path(output) / 'predictions.jsonl'}")
    if path.exists() and path.resolve() == Path(input_file).resolve():
        raise UserError(f"--output: {output} is the --input file; write the predictions to another file")
    if path.exists() and path.resolve().is_relative_to(Path(run).resolve()):
        raise UserError(f"--output: {output} is a file of the {what} {run}; write the predictions outside the {what} "
                        f"folder")
    parent = fsutil.nearest_existing(path.parent)
    if not fsutil.can_write_in(parent):
        raise UserError(f"--output: cannot write in {parent} (permission denied); choose another --output")
    return path


def predict(run: str | None, input_file: str, output_file: str, input_format: str = "auto", console=None,
            model: str | None = None, recipe_name: str | None = None, int8: bool = False) -> int:
    """Write one JSON line per input example: the predicted label and the probabilities. From a run (`run`) or a
    model folder (`model`: an export, or any with `recipe_name`)."""
    silence_libraries()
    recipe, model_dir, _ = model_source("predict", run, model, recipe_name)
    output = check_output_file(output_file, input_file, model_dir, "run" if run else "model")
    raw = read_inputs(input_file, "--input", input_format)
    saved = load_saved(recipe, model_dir, int8=int8)
    features = saved.task.preprocess(raw, saved.tokenizer, recipe, saved.labels, training=False)
    rows = saved.task.predict(_trainer(saved, model_dir), raw, features, saved.labels, recipe)
    fsutil.write_jsonl(output, rows)
    say(console, f"Wrote {len(rows):,} predictions to {output_file}")
    return len(rows)
