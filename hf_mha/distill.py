"""Knowledge distillation: the model being trained (the student) also learns the soft targets of a finished run
(the teacher, `distill.teacher`), for every task.

The loss is `(1 - alpha) * hard + alpha * soft`: `hard` is the loss the run would have without a teacher (the
model's, or ours for class weights and focal loss), `soft` compares the two models' outputs on the same batch,
softened by the temperature T and scaled by T^2 so its gradients keep their size as T changes (Hinton et al.,
2015): KL(teacher || student) over the classes of each example (sequence classification) or of each labelled
token (NER), and over the positions of each window for the start and the end of a QA answer; BCE against the
teacher's probabilities for multi-label; MSE for regression. The teacher runs in eval mode under no_grad, with
our attention when its run used it, batched with the student (`hf_mha.trainer.RunTrainer.compute_loss`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .models import load_config, load_tokenizer, task_model, use_attention
from .recipe import Recipe
from .run_folder import check_finished_run, load_run
from .tasks import Labels
from .tasks.multi_label import MULTI_LABEL
from .tasks.token_classification import IGNORED

#: Inputs the teacher reads from the student's batch (never the labels: the teacher's loss is not wanted).
TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_teacher(recipe: Recipe) -> Recipe:
    """The teacher is a finished run of the same task, and the student no deeper or wider than it; from configs,
    before data or weights load. Returns the teacher's recipe."""
    teacher = Path(recipe.distill.teacher)
    check_finished_run(teacher, "distill.teacher")
    taught = load_run(teacher)
    if taught.task != recipe.task:
        raise UserError(f"distill.teacher: {teacher} is a {taught.task} run; this recipe trains {recipe.task}: give a "
                        f"{recipe.task} teacher")
    mine, theirs = load_config(recipe), load_config(taught, str(teacher))
    depth = len(recipe.model.keep_layers) if recipe.model.keep_layers else recipe.model.num_layers or mine.num_hidden_layers
    width, their_width = getattr(mine, "hidden_size", 0), getattr(theirs, "hidden_size", 0)
    if depth > theirs.num_hidden_layers or width > their_width:
        raise UserError(f"distill.teacher: the student ({depth} layers, hidden size {width}) is larger than its teacher "
                        f"({theirs.num_hidden_layers} layers, hidden size {their_width}); distil into a smaller model, "
                        "e.g. model.num_layers=3")
    return taught


def check_teacher_labels(recipe: Recipe, labels: Labels, teacher_labels: Labels) -> None:
    if labels.names != teacher_labels.names:
        shown = lambda names: ", ".join(map(str, names or [])) or "none"  # noqa: E731
        raise UserError(f"distill.teacher: the teacher was trained on the labels [{shown(teacher_labels.names)}], this "
                        f"recipe's data has [{shown(labels.names)}]: distil on data with the teacher's label set")


def load_teacher(recipe: Recipe, taught: Recipe, labels: Labels, student_tokenizer) -> "Distiller":
    """The teacher of `recipe.distill` (its run's recipe `taught`, from `check_teacher`), checked against the
    student's labels and tokenizer, ready to run."""
    from .tasks import get_task
    from .tuning import load_tuned_model

    teacher_dir = Path(recipe.distill.teacher)
    tokenizer = load_tokenizer(taught, str(teacher_dir))
    if tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise UserError(f"distill.teacher: {teacher_dir} uses another vocabulary ({len(tokenizer):,} tokens against "
                        f"{len(student_tokenizer):,}); the teacher reads the student's tokens: pick a student of the "
                        "teacher's model family")
    model = use_attention(load_tuned_model(taught, teacher_dir), taught.model.attention, taught.model.backend)
    check_teacher_labels(recipe, labels, get_task(recipe.task).labels_from_config(task_model(model).config))
    model.eval().requires_grad_(False)
    return Distiller(model, recipe, labels)


class Distiller:
    #: Whether the teacher runs under bf16 autocast: set by training from the run's precision.
    bf16 = False

    def __init__(self, teacher: nn.Module, recipe: Recipe, labels: Labels):
        self.teacher, self.task = teacher, recipe.task
        self.temperature, self.alpha = recipe.distill.temperature, recipe.distill.alpha
        self.problem_type = labels.problem_type
        accepted = inspect.signature(task_model(teacher).forward).parameters
        self.inputs = [name for name in TEACHER_INPUTS if name in accepted]

    def combine(self, hard: torch.Tensor, outputs, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        """The distillation loss of one batch: the hard loss and the soft one, weighted by alpha."""
        device = inputs["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        # The teacher runs in the student's precision: bf16 where the run trains under bf16 autocast, which
        # accelerate applies to the student's forward only. Its outputs come back as fp32 for the soft loss.
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            taught = self.teacher(**{name: inputs[name] for name in self.inputs if name in inputs})
        for name, value in taught.items():
            if torch.is_tensor(value) and value.is_floating_point():
                taught[name] = value.float()
        soft_sum, count = self.soft(outputs, taught, inputs)
        soft = soft_sum / (num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1))
        return (1 - self.alpha) * hard + self.alpha * soft

    def soft(self, outputs, taught, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The soft loss summed over the batch's items, and the number of items."""
        T = self.temperature
        if self.task == "question-answering":
            keep = inputs["attention_mask"].bool()
            per_window = sum(_kl(outputs[key].masked_fill(~keep, -1e4), taught[key].masked_fill(~keep, -1e4), T)
                             for key in ("start_logits", "end_logits")) / 2
            return per_window.sum(), torch.tensor(per_window.numel(), device=per_window.device)
        student, teacher = outputs["logits"].float(), taught["logits"].float()
        if self.task == "token-classification":
            keep = inputs["labels"] != IGNORED
            per_token = _kl(student, teacher, T) * keep
            return per_token.sum(), keep.sum()
        count = torch.tensor(student.shape[0], device=student.device)
        if self.problem_type == "regression":
            return F.mse_loss(student, teacher, reduction="sum"), count
        if self.problem_type == MULTI_LABEL:
            targets = torch.sigmoid(teacher / T)
            bce = F.binary_cross_entropy_with_logits(student / T, targets, reduction="none").mean(dim=-1)
            return bce.sum() * T * T, count
        return _kl(student, teacher, T).sum(), count


def _kl(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """KL(teacher || student) over the last axis at temperature T, times T^2, per item."""
    log_student = F.log_softmax(student.float() / T, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / T, dim=-1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(dim=-1) * T * T
