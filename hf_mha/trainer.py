"""The Trainer mha-ft trains, scores and predicts with: transformers' Trainer with the fixes below, and
distillation from a teacher (`distill.teacher`) as a loss hook."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import TrainOutput, has_length

from . import fsutil
from .speedups import clip_grad_norm, has_sparse_grads

#: In every checkpoint: the loss sum and the training seconds of all steps up to it (see RunTrainer).
PROGRESS_FILE = "hf_mha_progress.json"


class RunTrainer(Trainer):
    """The Trainer, distilling from a teacher when one is set (`compute_loss`), clipping the sparse gradients of
    lazily updated embeddings (`hf_mha.speedups`), with three fixes:

    - transformers 5.23 groups evaluation batches by length too when `train_sampling_strategy` is
      `group_by_length`, so predictions come back out of example order (wrong rows in predictions files, and
      wrong NER/QA scores, which are matched to examples by position). Evaluation here always keeps the order.
    - `group_by_length` draws each epoch's order from the global RNG at the epoch's start, which a resumed run
      is not at (it restores the RNG of the checkpoint's step), so it trained on other batches than the
      uninterrupted run. Here each epoch's order comes from (seed, epoch), as accelerate's seedable sampler
      does for plain random order.
    - A resumed run reports train_loss and train_runtime of the steps after the resume only. Each checkpoint here
      also records the loss sum and seconds of every step before it (PROGRESS_FILE), so `train` returns the
      whole run's: a killed and resumed run ends with the metrics of one that was never interrupted.
    """

    #: Set by training when the recipe distils from a teacher (`hf_mha.distill.Distiller`).
    distiller = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.distiller is None or not model.training:  # evaluation reports the plain loss, without a teacher
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        # A copy: the Trainer pops the labels from the dict it gets, and the soft loss of NER needs them.
        hard, outputs = super().compute_loss(model, dict(inputs), return_outputs=True, num_items_in_batch=num_items_in_batch)
        own = num_items_in_batch if self.compute_loss_func is not None else None  # normalised as the hard loss is
        loss = self.distiller.combine(hard, outputs, inputs, own)
        return (loss, outputs) if return_outputs else loss

    def _clip_grad_norm(self, model):
        # torch's clip_grad_norm_ takes dense gradients only; the lazily updated embeddings' are sparse.
        if has_sparse_grads(model):
            return clip_grad_norm(model.parameters(), self.args.max_grad_norm)
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        if grad_norm is None and has_sparse_grads(model):
            grad_norm = clip_grad_norm(model.parameters(), float("inf"))
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is not LengthGroupedSampler:
            return sampler
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)

    def train(self, resume_from_checkpoint=None, **kwargs):
        progress = Path(resume_from_checkpoint or "") / PROGRESS_FILE
        self._carried = json.loads(progress.read_text()) if resume_from_checkpoint and progress.is_file() else {}
        self._leg_start = time.time()
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        if not self._carried:
            return output
        metrics, steps = dict(output.metrics), self.state.global_step
        leg_steps = max(steps - self._initial_global_step, 1)
        leg_runtime = metrics["train_runtime"]
        runtime = self._carried["runtime"] + leg_runtime
        metrics["train_loss"] = (self._carried["loss_sum"] + self._total_loss_scalar) / max(steps, 1)
        metrics["train_runtime"] = runtime
        metrics["train_samples_per_second"] *= leg_runtime / runtime * steps / leg_steps
        metrics["train_steps_per_second"] = steps / runtime
        return TrainOutput(steps, metrics["train_loss"], metrics)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.is_world_process_zero():
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            fsutil.write_json(folder / PROGRESS_FILE, {
                "loss_sum": self._carried.get("loss_sum", 0.0) + self._total_loss_scalar + self._tr_loss.item(),
                "runtime": self._carried.get("runtime", 0.0) + time.time() - self._leg_start,
            })


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """LengthGroupedSampler whose order in epoch e depends on (seed, e) alone (the Trainer calls set_epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)
