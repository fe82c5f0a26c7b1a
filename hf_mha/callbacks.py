"""Trainer callbacks that make a run safe to kill, interrupt or resume.

- Every checkpoint gets a `.complete` marker once the Trainer has written all of it (`on_save` runs after
  `_save_checkpoint`), so resuming never picks a checkpoint that a kill cut short.
- A non-finite training or evaluation loss stops the run before anything is saved from the diverged weights, so
  every complete checkpoint has finite weights and, where it was evaluated, a finite evaluation.
- Ctrl-C asks for a checkpoint at the end of the current step, then stops; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
from pathlib import Path

from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from .run_folder import COMPLETE_MARKER

#: What an early-stopped run writes into its folder: when it stopped and which checkpoint it kept.
EARLY_STOPPING_FILE = "early_stopping.json"


def early_stopping(recipe) -> list[TrainerCallback]:
    """transformers' EarlyStoppingCallback when the recipe sets train.early_stopping_patience."""
    options = recipe.train_options()
    if not options.early_stopping_patience:
        return []
    return [EarlyStoppingCallback(options.early_stopping_patience, options.early_stopping_threshold)]


def early_stopping_record(recipe, trainer) -> dict | None:
    """Where an early-stopping run ended and which checkpoint it kept (the best, loaded at the end)."""
    options = recipe.train_options()
    if not options.early_stopping_patience:
        return None
    state, args = trainer.state, trainer.args
    planned = args.max_steps if args.max_steps > 0 else state.max_steps
    stopped = state.global_step < planned
    best = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
    record = {
        "stopped_early": stopped, "stopped_at_step": state.global_step, "stopped_at_epoch": round(state.epoch or 0, 4),
        "planned_steps": planned, "planned_epochs": args.num_train_epochs,
        "metric": args.metric_for_best_model, "best_metric": state.best_metric,
        "best_step": getattr(state, "best_global_step", None), "best_checkpoint": best,
        "patience": options.early_stopping_patience, "threshold": options.early_stopping_threshold,
    }
    when = (f"stopped early at epoch {record['stopped_at_epoch']:g} (step {state.global_step} of {planned})"
            if stopped else f"ran all {planned} steps without stopping early")
    score = f"{state.best_metric:.4f}" if state.best_metric is not None else "not measured"
    record["summary"] = f"Early stopping: {when}; kept the best checkpoint {best} ({args.metric_for_best_model} {score})."
    return record


class RunGuard(TrainerCallback):
    def __init__(self) -> None:
        self.diverged_at: tuple[int, float, str] | None = None  # step, loss, training or evaluation
        self.interrupted = False
        self._previous_handler = None

    # -- Ctrl-C
    def install_interrupt_handler(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def remove_interrupt_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def _on_sigint(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True
        return control

    # -- divergence: on_log and on_evaluate run before the step's save, so the diverged weights stay out of it
    def on_log(self, args, state, control, logs=None, **kwargs):
        return self._stop_if_not_finite((logs or {}).get("loss"), "training", state, control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        return self._stop_if_not_finite((metrics or {}).get("eval_loss"), "evaluation", state, control)

    def _stop_if_not_finite(self, loss, which: str, state, control):
        if loss is not None and not math.isfinite(loss):
            self.diverged_at = (state.global_step, loss, which)
            control.should_save = False
            control.should_training_stop = True
        return control

    # -- checkpoints
    def on_save(self, args, state, control, model=None, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not state.is_world_process_zero or not checkpoint.is_dir():
            return control
        if model is not None and not all(p.isfinite().all() for p in model.parameters()):
            # The loss went non-finite between two logging steps: this checkpoint holds diverged weights.
            shutil.rmtree(checkpoint, ignore_errors=True)
            self.diverged_at = self.diverged_at or (state.global_step, float("nan"), "training")
            control.should_training_stop = True
            return control
        (checkpoint / COMPLETE_MARKER).write_text(f"step {state.global_step}\n")
        return control


class LogLines(ProgressCallback):
    """The Trainer's progress bar, with each log written as `step 40/750 · loss 0.4123 · lr 4.2e-05` instead of
    a Python dict with every number quoted as a string."""

    HIDDEN = ("total_flos", "epoch", "grad_norm")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        parts = [f"step {state.global_step}/{state.max_steps}", f"epoch {state.epoch or 0:.2f}"]
        for key, value in logs.items():
            if key in self.HIDDEN or key.endswith(("_runtime", "_per_second")):
                continue
            name = key.replace("learning_rate", "lr")
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
        self.training_bar.write(" · ".join(parts))
