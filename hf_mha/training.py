"""Train, evaluate and predict: a recipe (or a run folder) in, a Trainer built on it, a run folder out.

`prepare(recipe)` is every check `train` makes before it loads the model, in one place: `validate` runs it and
stops there. A run folder holds everything needed to evaluate, predict, resume or export:

    recipe.yaml            the resolved recipe (written first)
    config.json, model.safetensors, tokenizer files   the final model (AutoModelFor....from_pretrained(run))
    checkpoint-*/          while training; removed at the end unless keep_checkpoints: true
    metrics.json           flat metrics (eval_*, test_*, train_*), written last: its presence marks a finished run
    eval_report.txt, predictions.jsonl, eval_confusion_matrix.png, test_* twins, loss_curve.png, env.json
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import SequentialSampler
from transformers import Trainer
from transformers.trainer_utils import has_length

from . import fsutil
from .callbacks import LogLines, RunGuard
from .console import print_results, say
from .data import TABULAR, load_raw, read_inputs
from .env import environment
from .errors import RunStopped, UserError
from .models import load_model, load_tokenizer, use_attention
from .recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict
from .run_folder import FINISHED_MARKER, RECIPE_FILE, check_output_dir, complete_checkpoints, load_run, resume_point
from .tasks import Labels, Task, get_task
from .tuning import Tuning, count_trainable, load_tuned_model, resolve

#: Evaluation batches hold no gradients, so they can be larger than training ones.
EVAL_BATCH_SIZE = 64


class RunTrainer(Trainer):
    """transformers 5.23 groups evaluation batches by length too when `train_sampling_strategy` is
    `group_by_length`, so predictions come back out of example order (wrong rows in predictions files, and
    wrong NER/QA scores, which are matched to examples by position). Evaluation here always keeps the order."""

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


def silence_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()  # one progress bar: the Trainer's
    transformers.logging.disable_progress_bar()  # (loading and writing weights draw their own)
    transformers.logging.set_verbosity_error()


# --------------------------------------------------------------------------- training arguments


def _defaults() -> dict[str, Any]:
    import torch

    return {
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": EVAL_BATCH_SIZE,
        "learning_rate": 5e-5,
        "num_train_epochs": 3,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "logging_steps": 10,
        "report_to": "none",
        "save_total_limit": 2,
        "logging_nan_inf_filter": False,  # the default hides a diverged loss from the logs (and from RunGuard)
        "disable_tqdm": False,  # the default follows transformers' log level, which we turn down
        "dataloader_pin_memory": torch.cuda.is_available(),  # pinning without a GPU only warns
    }


def training_arguments(recipe: Recipe, metric_for_best: str | None):
    import torch
    from transformers import TrainingArguments

    defaults = _defaults()
    if metric_for_best:
        defaults |= {"load_best_model_at_end": True, "metric_for_best_model": metric_for_best}
    if torch.cuda.is_available() and "fp16" not in recipe.train and "bf16" not in recipe.train:
        defaults["bf16" if torch.cuda.is_bf16_supported() else "fp16"] = True
    values = defaults | recipe.train
    if values.get("eval_strategy") == "no":
        values.pop("load_best_model_at_end", None)
    try:
        return TrainingArguments(output_dir=recipe.output_dir, **values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"train: {' '.join(str(exc).split())[:400]}") from None


def eval_batch_size(recipe: Recipe) -> int:
    return int(recipe.train.get("per_device_eval_batch_size", EVAL_BATCH_SIZE))


# --------------------------------------------------------------------------- train and validate


@dataclass
class Plan:
    """A recipe checked against everything `train` can know before the model loads."""

    recipe: Recipe
    tuning: Tuning
    task: Task
    raw: Any  # DatasetDict: train, validation, and test when there is one
    labels: Labels
    metric_names: list[str]
    args: Any  # TrainingArguments
    tokenizer: Any


def prepare(recipe: Recipe) -> Plan:
    """Check the recipe's tuning, data, labels, metrics, training arguments and tokenizer, cheapest first."""
    silence_libraries()
    tuning = resolve(recipe)  # a misspelt option fails in a second, not after the data and the model have loaded
    task = get_task(recipe.task)
    raw = load_raw(recipe)
    labels = task.labels(raw, recipe)
    metric_names = task.metric_names(recipe, labels)
    args = training_arguments(recipe, metric_names[0] if metric_names else None)
    return Plan(recipe, tuning, task, raw, labels, metric_names, args, load_tokenizer(recipe))


def validate(recipe: Recipe) -> dict[str, Any]:
    """`mha-ft validate`: the checks of `prepare`, and a few examples tokenized; a summary of what would train."""
    plan = prepare(recipe)
    train_split = plan.raw["train"]
    sample = train_split.select(range(min(8, len(train_split))))
    features = plan.task.preprocess(sample, plan.tokenizer, recipe, plan.labels, training=True)
    args, labels = plan.args, plan.labels
    return {
        "task": recipe.task,
        "model": f"{recipe.model.name} ({recipe.model.attention} attention, backend {recipe.model.backend})",
        "splits": ", ".join(f"{split} {len(ds):,}" for split, ds in plan.raw.items()),
        "labels": ", ".join(labels.names) if labels.names else (labels.problem_type or "spans"),
        "tuning": recipe.tuning.method,
        "metrics": ", ".join(plan.metric_names),
        "training": f"{args.num_train_epochs:g} epochs, batch {args.per_device_train_batch_size}, lr {args.learning_rate:g}",
        "first example tokens": len(features[0]["input_ids"]),
        "output_dir": recipe.output_dir,
    }


def train(recipe: Recipe, overwrite: bool = False, resume: bool | None = None, console=None) -> dict[str, float]:
    """Fine-tune as the recipe says; return the flat metrics also written to metrics.json."""
    from accelerate import PartialState
    from transformers import set_seed
    from transformers.trainer_callback import ProgressCallback

    out = Path(recipe.output_dir)
    state = PartialState()
    main_console = console if state.is_main_process else None
    with state.main_process_first():  # only the main process may clear a folder; the others look after it
        found_unfinished = check_output_dir(out, overwrite and state.is_main_process)
    checkpoint = resume_point(out, found_unfinished, resume, lambda text: say(main_console, text))
    plan = prepare(recipe)
    task, raw, labels, tokenizer, args = plan.task, plan.raw, plan.labels, plan.tokenizer, plan.args
    features = {split: task.preprocess(ds, tokenizer, recipe, labels, training=(split == "train")) for split, ds in raw.items()}

    set_seed(args.seed)
    model = load_model(recipe, task.model_class, attention=recipe.model.attention, **labels.config_kwargs())
    model = plan.tuning.apply(model)
    trainable = count_trainable(model)

    guard = RunGuard()
    trainer = RunTrainer(
        model=model,
        args=args,
        train_dataset=features["train"],
        eval_dataset=features["validation"],
        data_collator=task.collator(tokenizer, recipe),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(raw["validation"], features["validation"], labels, recipe),
        callbacks=[guard, *plan.tuning.callbacks()],
        optimizer_cls_and_kwargs=plan.tuning.optimizer(model, args),
    )
    if not args.disable_tqdm:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LogLines())
    main = trainer.is_world_process_zero()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        fsutil.write_text(out / RECIPE_FILE, recipe.to_yaml())
        say(console, f"[bold]{recipe.task}[/] · model {recipe.model.name} ({recipe.model.attention} attention) · "
            f"tuning {recipe.tuning.method}: {trainable['trainable_params']:,} trainable parameters "
            f"({trainable['trainable_percent']:.2f}%) · train {len(raw['train']):,} / validation "
            f"{len(raw['validation']):,}" + (f" / test {len(raw['test']):,}" if "test" in raw else ""))
    guard.install_interrupt_handler()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        guard.remove_interrupt_handler()
    _raise_if_stopped(guard, out)

    metrics: dict[str, float] = {f"train_{k.removeprefix('train_')}": v for k, v in result.metrics.items()}
    metrics |= trainable
    reports = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in raw:
            split_metrics, reports[prefix] = task.score(
                trainer, raw[split], features[split], labels, recipe, out if main else None, prefix
            )
            metrics |= split_metrics
    if main:
        plan.tuning.save(trainer.model, out)
        tokenizer.save_pretrained(out)
        from .reports import save_loss_curve_png

        save_loss_curve_png(trainer.state.log_history, out / "loss_curve.png")
        fsutil.write_json(out / "env.json", environment())
        if not recipe.keep_checkpoints:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
        fsutil.write_json(out / FINISHED_MARKER, metrics)
        print_results(console, metrics, reports, out)
    return metrics


def _raise_if_stopped(guard: RunGuard, out: Path) -> None:
    checkpoints = complete_checkpoints(out)
    kept = f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint was saved yet"
    if guard.diverged_at is not None:
        step, loss = guard.diverged_at
        raise RunStopped(
            f"training loss became {loss} at step {step}: stopped; {kept}. Lower train.learning_rate, set "
            f"train.max_grad_norm, or check the labels, then train again with --overwrite", exit_code=1,
        )
    if guard.interrupted:
        raise RunStopped(f"interrupted: {kept}; run the same command again to resume", exit_code=130)


# --------------------------------------------------------------------------- eval and predict on a saved model


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


def _inference_trainer(saved: SavedModel, out_dir: Path):
    from transformers import TrainingArguments

    defaults = _defaults()
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_eval_batch_size=eval_batch_size(saved.recipe), report_to="none",
        dataloader_pin_memory=defaults["dataloader_pin_memory"],
    )
    return RunTrainer(
        model=saved.model, args=args, processing_class=saved.tokenizer,
        data_collator=saved.task.collator(saved.tokenizer, saved.recipe),
    )


def evaluate_run(run: str | None = None, model: str | None = None, recipe_name: str | None = None,
                 split: str = "validation", file: str | None = None, overrides: list[str] | None = None,
                 console=None) -> dict[str, float]:
    """Score a finished run (or a model folder with a recipe) on a split of the recipe's data or on a file."""
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
    saved = load_saved(recipe, model_dir)
    if file:
        # validation.jsonl -> validation_*, eng.testb -> eng_testb_*: the name, less a data-format extension
        path = Path(file)
        name = path.stem if path.suffix.lower() in TABULAR else path.name
        raw_split, prefix = read_inputs(file), name.replace(".", "_")
    else:
        raw_split, prefix = pick_split(load_raw(recipe), split), {"validation": "eval"}.get(split, split)
    check_labels(saved, raw_split)
    features = saved.task.preprocess(raw_split, saved.tokenizer, recipe, saved.labels, training=False)
    trainer = _inference_trainer(saved, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, report = saved.task.score(trainer, raw_split, features, saved.labels, recipe, out_dir, prefix)
    fsutil.write_json(out_dir / f"{prefix}_metrics.json", metrics)
    print_results(console, metrics, {prefix: report}, out_dir)
    return metrics


def pick_split(raw, split: str):
    if split not in raw:
        raise UserError(f"--split: no '{split}' split in the data (have: {', '.join(raw)})")
    return raw[split]


def check_labels(saved: SavedModel, raw_split) -> None:
    """The split must have gold labels, all from the label set the model was trained on."""
    recipe, labels = saved.recipe, saved.labels
    problem_type = "regression" if labels.problem_type == "regression" else recipe.data.problem_type
    data = recipe.data.model_copy(update={"labels": labels.names, "problem_type": problem_type})
    saved.task.labels({"train": raw_split}, recipe.model_copy(update={"data": data}))


def predict(run: str, input_file: str, output_file: str, console=None) -> int:
    """Write one JSON line per input example: the predicted label and the probabilities."""
    recipe = load_run(run)
    saved = load_saved(recipe, run)
    raw = read_inputs(input_file)
    features = saved.task.preprocess(raw, saved.tokenizer, recipe, saved.labels, training=False)
    trainer = _inference_trainer(saved, Path(run))
    rows = saved.task.predict(trainer, raw, features, saved.labels, recipe)
    fsutil.write_jsonl(output_file, rows)
    say(console, f"Wrote {len(rows):,} predictions to {output_file}")
    return len(rows)
