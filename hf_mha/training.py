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

import contextlib
import errno
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from . import fsutil
from .callbacks import EARLY_STOPPING_FILE, LogLines, RunGuard, early_stopping, early_stopping_record
from .console import print_results, say, warn
from .data import load_raw
from .data_report import SplitReport, data_warnings, split_reports
from .env import environment
from .losses import check_loss_options, loss_function
from .errors import RunStopped, UserError
from .distill import check_teacher, load_teacher
from .models import kept_layers, load_config, load_model, load_tokenizer, max_positions
from .recipe import OWN_TRAIN_KEYS, Recipe
from .speedups import compile_dense_blocks, dense_embeddings, fast_dropout, lazy_embedding_optimizer
from .run_folder import (COMPLETE_MARKER, FINISHED_MARKER, LOG_HISTORY_FILE, RECIPE_FILE, REPLACE, RESUME, RunLock,
                         check_free_space, size_text, check_same_recipe, clear_output_dir, complete_checkpoints, output_dir_plan, resume_point)
from .tasks import Labels, Task, get_task
from .trainer import RunTrainer
from .tuning import Tuning, count_trainable, resolve

#: Write errors that leave a checkpoint half-written: the disk or quota is full, or the folder is not writable.
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG)
#: Evaluation batches hold no gradients, so they can be larger than training ones.
EVAL_BATCH_SIZE = 64


def silence_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()  # one progress bar: the Trainer's
    transformers.logging.disable_progress_bar()  # (loading and writing weights draw their own)
    transformers.logging.set_verbosity_error()
    # peft 0.21 reads PreTrainedModel.is_gradient_checkpointing, deprecated in transformers 5: nothing a user
    # can change, printed on every PEFT run.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


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
    from transformers import TrainingArguments

    defaults = _defaults()
    if metric_for_best:
        from .metrics import greater_is_better

        defaults |= {"load_best_model_at_end": True, "metric_for_best_model": metric_for_best,
                     "greater_is_better": greater_is_better(metric_for_best)}
    values = defaults | precision(recipe) | {key: value for key, value in recipe.train.items()
                                              if key not in OWN_TRAIN_KEYS and key != "bf16"}
    if values.get("eval_strategy") == "no":
        values.pop("load_best_model_at_end", None)
    if values.get("torch_compile") and recipe.model.attention == "mha":
        values["torch_compile"] = False  # ours compiles the blocks around the attention instead (_train)
    if recipe.train_options().early_stopping_patience:
        if values.get("eval_strategy") == "no" or not metric_for_best:
            raise UserError("train.early_stopping_patience: needs evaluation on validation each epoch or "
                            "eval_steps; remove train.eval_strategy=no")
        # A resumed run keeps counting evaluations without improvement from where it stopped.
        values.setdefault("restore_callback_states_from_checkpoint", True)
    try:
        return TrainingArguments(output_dir=recipe.output_dir, **values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"train: {' '.join(str(exc).split())[:400]}") from None


def precision(recipe: Recipe) -> dict[str, bool]:
    """TrainingArguments' bf16/fp16 flags for the recipe: `train.bf16: auto` (the default, unless fp16 is set)
    picks bf16 autocast where this machine multiplies bf16 natively, fp32 elsewhere (hf_mha.speedups)."""
    from .speedups import auto_precision

    import torch

    bf16 = recipe.train.get("bf16", "auto" if not recipe.train.get("fp16") else False)
    flags = auto_precision(bool(recipe.train.get("use_cpu"))) if bf16 == "auto" else {"bf16": bool(bf16)}
    if flags.get("bf16") and not torch.cuda.is_available():
        flags["use_cpu"] = True  # TrainingArguments refuses bf16 without a GPU unless told the CPU is meant
    return flags


def slow_precision_warning(args) -> str | None:
    """A line for a run that would multiply in bf16 on a CPU without native bf16 units, or None."""
    from .speedups import cpu_bf16_units

    import torch

    on_cpu = args.use_cpu or not torch.cuda.is_available()
    if not (args.bf16 and on_cpu) or cpu_bf16_units():
        return None
    return ("train.bf16: true on a CPU without native bf16 units (AVX-512 BF16 or AMX), where bf16 matrix products "
            "run far slower than fp32 (a MiniLM training step 20x slower on an AVX2 AMD EPYC); train.bf16: auto "
            "picks fp32 here")


def inference_arguments(recipe: Recipe, out_dir: Path):
    """TrainingArguments for scoring and predicting with a trained model: the recipe's eval batch size, the
    defaults' pinning (none without a GPU, where it only warns)."""
    from transformers import TrainingArguments

    defaults = _defaults()
    return TrainingArguments(
        output_dir=str(out_dir), per_device_eval_batch_size=eval_batch_size(recipe), report_to="none",
        dataloader_pin_memory=defaults["dataloader_pin_memory"],
    )


def eval_batch_size(recipe: Recipe) -> int:
    return int(recipe.train.get("per_device_eval_batch_size", EVAL_BATCH_SIZE))


# --------------------------------------------------------------------------- train and validate


@dataclass
class Plan:
    """A recipe checked against everything `train` can know before it starts: data read and tokenized, model
    loaded and tuned."""

    recipe: Recipe
    tuning: Tuning
    task: Task
    raw: Any  # DatasetDict: train, validation, and test when there is one
    labels: Labels
    metric_names: list[str]
    args: Any  # TrainingArguments
    tokenizer: Any
    features: dict[str, Any]
    model: Any
    trainable: dict[str, float]
    checkpoint_bytes: int  # about what one checkpoint takes on disk
    data_reports: list[SplitReport]  # per split: examples, label counts, share over max_length
    compute_loss: Any  # the Trainer's compute_loss_func for class weights or focal loss; None: the model's loss
    distiller: Any = None  # the teacher of distill.teacher and its loss (hf_mha.distill.Distiller)


def check_output(recipe: Recipe, overwrite: bool, resume: bool | None, console=None) -> tuple[str, str | None]:
    """What training does with output_dir (NEW, RESUME or REPLACE) and the checkpoint it resumes from; refuses
    what `train` refuses, and a resume with a recipe that differs from the run's."""
    out = Path(recipe.output_dir)
    what = output_dir_plan(out, overwrite)
    checkpoint = resume_point(out, what == RESUME, resume, lambda text: say(console, text))
    if checkpoint:
        check_same_recipe(out, recipe)
    return what, checkpoint


def prepare(recipe: Recipe) -> Plan:
    """Every check `train` makes before its first step, cheapest first: tuning options, training arguments,
    data, labels, metrics, tokenizer, max_length against the model's positions, features, the model with its
    tuning, and the disk space a checkpoint needs."""
    silence_libraries()
    tuning = resolve(recipe)  # a misspelt option fails in a second, not after the data and the model have loaded
    if recipe.model.keep_layers or recipe.model.num_layers:
        kept_layers(recipe, load_config(recipe))  # layers in range, before the data is read
    taught = check_teacher(recipe) if recipe.distill.teacher else None
    checked = training_arguments(recipe, "loss")  # values and their combinations, before any data is read
    if slow := slow_precision_warning(checked):
        warn(slow)
    task = get_task(recipe.task)
    raw = load_raw(recipe)
    labels = task.labels(raw, recipe)
    metric_names = task.metric_names(recipe, labels)
    check_loss_options(recipe, labels)
    args = training_arguments(recipe, metric_names[0] if metric_names else None)
    tokenizer = load_tokenizer(recipe)
    config = load_config(recipe, **labels.config_kwargs())
    if labels.thresholds:  # from_pretrained sets only keys the config class knows
        config.label_thresholds = list(labels.thresholds)
    positions = max_positions(config)
    if positions is not None and recipe.data.max_length > positions:
        raise UserError(
            f"data.max_length: {recipe.data.max_length} is more than the {positions} positions of {recipe.model.name}; "
            f"set data.max_length={positions} or less"
        )
    reports = split_reports(recipe, task, raw, tokenizer)
    for warning in data_warnings(recipe, raw, reports, tuning, args.learning_rate):
        warn(warning)
    features = {split: task.preprocess(ds, tokenizer, recipe, labels, training=(split == "train")) for split, ds in raw.items()}
    compute_loss = loss_function(recipe, labels, features["train"]["labels"][:] if labels.names else None)
    from transformers import set_seed

    set_seed(args.seed)  # the new task head's initial weights
    model = tuning.apply(load_model(recipe, task.model_class, config=config, attention=recipe.model.attention))
    needed = checkpoint_bytes(model, tuning)
    check_free_space(Path(recipe.output_dir), 2 * needed, "a checkpoint and the final model")
    distiller = load_teacher(recipe, taught, labels, tokenizer) if taught is not None else None
    return Plan(recipe, tuning, task, raw, labels, metric_names, args, tokenizer, features, model,
                count_trainable(model), needed, reports, compute_loss, distiller)


def checkpoint_bytes(model, tuning: Tuning) -> int:
    """About what one checkpoint takes on disk: the saved weights (all for a whole model, else what trains) and
    AdamW's two moments of every trained weight."""
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    saved = sum(p.numel() * p.element_size() for p in model.parameters()) if tuning.ADAPTER_CONFIG is None else trained
    return saved + 2 * trained


def validate(recipe: Recipe, overwrite: bool = False, resume: bool | None = None) -> dict[str, Any]:
    """`mha-ft validate`: the checks of `train` up to its first step (`check_output`, the folder's lock,
    `prepare`), writing nothing; a summary of what would train."""
    check_output(recipe, overwrite, resume)
    RunLock(Path(recipe.output_dir)).check()
    plan = prepare(recipe)
    args, labels = plan.args, plan.labels
    return {
        "task": recipe.task,
        "model": f"{recipe.model.name} ({recipe.model.attention} attention, backend {recipe.model.backend})",
        **{report.split: report.line(recipe.data.max_length) for report in plan.data_reports},
        "labels": ", ".join(map(str, labels.names)) if labels.names else (labels.problem_type or "spans"),
        "tuning": f"{recipe.tuning.method}: {plan.trainable['trainable_params']:,} trainable parameters "
                  f"({plan.trainable['trainable_percent']:.2f}%)",
        "metrics": ", ".join(plan.metric_names),
        "training": f"{args.num_train_epochs:g} epochs, batch {args.per_device_train_batch_size}, lr {args.learning_rate:g}",
        "first example tokens": len(plan.features["train"][0]["input_ids"]),
        "output_dir": recipe.output_dir,
    }


def train(recipe: Recipe, overwrite: bool = False, resume: bool | None = None, console=None,
          callbacks: tuple = ()) -> dict[str, float]:
    """Fine-tune as the recipe says; return the flat metrics also written to metrics.json. `callbacks` join the
    Trainer's (`mha-ft search` reports each evaluation to its trial through one)."""
    from accelerate import PartialState

    out = Path(recipe.output_dir)
    state = PartialState()
    with contextlib.ExitStack() as held:
        with state.main_process_first():  # the main process locks and clears the folder; the others then look
            if state.is_main_process:
                output_dir_plan(out, overwrite)  # a file or an unwritable place, before the lock creates the folder
                held.enter_context(RunLock(out))
            what, checkpoint = check_output(recipe, overwrite, resume, console if state.is_main_process else None)
            if what == REPLACE and state.is_main_process:
                clear_output_dir(out)
        plan = prepare(recipe)
        return _train(plan, checkpoint, console, callbacks)


def _train(plan: Plan, checkpoint: str | None, console, callbacks: tuple = ()) -> dict[str, float]:
    from transformers.trainer_callback import ProgressCallback

    recipe, task, raw, labels, tokenizer, args = plan.recipe, plan.task, plan.raw, plan.labels, plan.tokenizer, plan.args
    out, features, trainable = Path(recipe.output_dir), plan.features, plan.trainable
    guard = RunGuard()
    if recipe.train_options().fast_dropout:
        fast_dropout(plan.model)
    if recipe.train.get("torch_compile") and recipe.model.attention == "mha":
        compile_dense_blocks(plan.model)
    trainer = RunTrainer(
        model=plan.model,
        args=args,
        train_dataset=features["train"],
        eval_dataset=features["validation"],
        data_collator=task.collator(tokenizer, recipe),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(raw["validation"], features["validation"], labels, recipe),
        callbacks=[guard, *plan.tuning.callbacks(), *early_stopping(recipe), *callbacks],
        optimizer_cls_and_kwargs=optimizer(plan),
        compute_loss_func=plan.compute_loss,
    )
    trainer.distiller = plan.distiller
    if plan.distiller is not None:
        plan.distiller.bf16 = bool(args.bf16)
    if not args.disable_tqdm:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LogLines())
    main = trainer.is_world_process_zero()
    if main:
        fsutil.write_text(out / RECIPE_FILE, recipe.to_yaml())
        say(console, f"[bold]{recipe.task}[/] · model {recipe.model.name} ({recipe.model.attention} attention, "
            f"{'bf16 autocast' if args.bf16 else 'fp16 autocast' if args.fp16 else 'fp32'}) · "
            f"tuning {recipe.tuning.method}: {trainable['trainable_params']:,} trainable parameters "
            f"({trainable['trainable_percent']:.2f}%) · train {len(raw['train']):,} / validation "
            f"{len(raw['validation']):,}" + (f" / test {len(raw['test']):,}" if "test" in raw else ""))
    needed = plan.checkpoint_bytes
    guard.install_interrupt_handler()
    try:
        with _stop_on_write_error(out, needed):
            result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        guard.remove_interrupt_handler()
        _close_progress_bars(trainer)
        dense_embeddings(trainer.model)
    _raise_if_stopped(guard, out)
    # Evaluations during training ran under the run's autocast (bf16 by default); the scores of record, like
    # `eval` and `predict` afterwards and the exports' checks, are fp32. accelerate put the autocast into the
    # model's forward; this takes it out again.
    from accelerate.utils import extract_model_from_parallel

    extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False)

    metrics: dict[str, float] = {f"train_{k.removeprefix('train_')}": v for k, v in result.metrics.items()}
    metrics |= trainable
    stopped = early_stopping_record(recipe, trainer)
    reports = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in raw:
            split_metrics, reports[prefix] = task.score(
                trainer, raw[split], features[split], labels, recipe, out if main else None, prefix
            )
            metrics |= split_metrics
    if main:
        from .model_card import write_model_card
        from .reports import save_loss_curve_png

        with _stop_on_write_error(out, needed):
            plan.tuning.save(trainer.model, out)
            tokenizer.save_pretrained(out)
            save_loss_curve_png(trainer.state.log_history, out / "loss_curve.png")
            fsutil.write_json(out / LOG_HISTORY_FILE, trainer.state.log_history)  # for `mha-ft compare --plot`
            fsutil.write_json(out / "env.json", environment())
        if not recipe.keep_checkpoints:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
        if stopped:
            fsutil.write_json(out / EARLY_STOPPING_FILE, stopped)
            say(console, stopped["summary"])
        write_model_card(out, recipe, metrics, out)
        fsutil.write_json(out / FINISHED_MARKER, metrics)
        print_results(console, metrics, reports, out)
    return metrics


def optimizer(plan: Plan):
    """The tuning family's optimizer (class, kwargs), None for the Trainer's own, with row-sparse updates of the
    word embeddings where `train.lazy_embeddings` applies (hf_mha.speedups)."""
    chosen = plan.tuning.optimizer(plan.model, plan.args)
    if not plan.recipe.train_options().lazy_embeddings:
        return chosen
    return lazy_embedding_optimizer(plan.model, plan.args, chosen)


def _close_progress_bars(trainer) -> None:
    """A run stopped by an exception leaves its bar open (the Trainer closes it in on_train_end), and it would
    print after the one line that says why the run stopped."""
    for callback in trainer.callback_handler.callbacks:
        for bar in ("training_bar", "prediction_bar"):
            if getattr(callback, bar, None) is not None:
                getattr(callback, bar).close()
                setattr(callback, bar, None)


@contextlib.contextmanager
def _stop_on_write_error(out: Path, needed: int):
    """A full disk or a folder that turned read-only stops the run with one line instead of a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        raise _write_failed(exc, out, needed) from None


def _write_failed(exc: OSError, out: Path, needed: int) -> RunStopped:
    """A checkpoint could not be written: remove what is left of it, keep the complete ones, say what it needs."""
    for partial in out.glob("checkpoint-*"):
        if partial.is_dir() and not (partial / COMPLETE_MARKER).is_file():
            shutil.rmtree(partial, ignore_errors=True)
    checkpoints = complete_checkpoints(out)
    kept = f"the last complete checkpoint is {checkpoints[-1].name}" if checkpoints else "no complete checkpoint yet"
    free = shutil.disk_usage(out).free
    return RunStopped(
        f"could not write to {out}: {exc.strerror or exc} ({exc.filename or 'a checkpoint'}); a checkpoint of this run "
        f"needs about {size_text(needed)}, {size_text(free)} are free. The partial checkpoint was removed and "
        f"{kept}: make room, then run the same command to resume", exit_code=1,
    )


def _raise_if_stopped(guard: RunGuard, out: Path) -> None:
    checkpoints = complete_checkpoints(out)
    kept = f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint was saved yet"
    if guard.diverged_at is not None:
        step, loss, which = guard.diverged_at
        raise RunStopped(
            f"{which} loss became {loss} at step {step}: stopped; {kept}. Lower train.learning_rate, set "
            f"train.max_grad_norm, or check the labels, then train again with --overwrite", exit_code=1,
        )
    if guard.interrupted:
        raise RunStopped(f"interrupted: {kept}; run the same command again to resume", exit_code=130)
