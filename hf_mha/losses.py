"""Losses for skewed labels, given to the Trainer as its `compute_loss_func`: class-weighted cross-entropy
(`train.class_weights`), BCE with `pos_weight` for multi-label, and focal loss (`train.loss: focal`).

The Trainer hands `compute_loss_func` the model outputs, the labels and `num_items_in_batch` (the labelled items
of the whole accumulated batch) and does not rescale what it returns for gradient accumulation, so each loss
here is a sum over the batch divided by that count (a mean when it is not given, as in evaluation).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import UserError, did_you_mean
from .recipe import Recipe
from .tasks import Labels
from .tasks.multi_label import MULTI_LABEL
from .tasks.token_classification import IGNORED


def check_loss_options(recipe: Recipe, labels: Labels) -> None:
    """What `train.class_weights` and `train.loss` ask is possible for this task and label set (before the model
    loads)."""
    options = recipe.train_options()
    if not options.own_loss:
        return
    key = "train.class_weights" if options.class_weights is not None else "train.loss"
    if recipe.task == "question-answering" or not labels.names:
        raise UserError(f"{key}: weights and focal loss are for classification labels; this run has "
                        f"{'spans' if recipe.task == 'question-answering' else 'a regression target'}: remove it")
    if isinstance(options.class_weights, dict):
        known = {str(name) for name in labels.names}
        for name in options.class_weights:
            if str(name) not in known:
                raise UserError(f"train.class_weights: '{name}' is not a label{did_you_mean(str(name), known)}; "
                                f"labels: {', '.join(map(str, labels.names))}")


def class_weights(recipe: Recipe, labels: Labels, train_labels) -> torch.Tensor | None:
    """One weight per label id: `balanced` is n / (k * count) (sklearn's), so the weights average 1 over the
    training examples; a mapping gives some labels a weight and the others 1. For multi-label, `balanced` is
    BCE's pos_weight: negatives / positives per label."""
    given = recipe.train_options().class_weights
    if given is None:
        return None
    k = len(labels.names)
    if isinstance(given, dict):
        by_name = {str(name): float(weight) for name, weight in given.items()}
        return torch.tensor([by_name.get(str(name), 1.0) for name in labels.names])
    if labels.problem_type == MULTI_LABEL:
        positives = torch.tensor(train_labels, dtype=torch.float).sum(dim=0)
        return (len(train_labels) - positives) / positives.clamp(min=1)
    counts = Counter(int(i) for row in train_labels for i in (row if isinstance(row, list) else [row]) if i != IGNORED)
    total = sum(counts.values())
    return torch.tensor([total / (k * counts[i]) if counts[i] else 1.0 for i in range(k)])


def loss_function(recipe: Recipe, labels: Labels, train_labels) -> Callable | None:
    """The Trainer's compute_loss_func for the recipe, or None for the model's own loss."""
    options = recipe.train_options()
    if not options.own_loss:
        return None
    weights = class_weights(recipe, labels, train_labels)
    gamma = options.focal_gamma if options.loss == "focal" else 0.0
    multi_label = labels.problem_type == MULTI_LABEL

    def compute(outputs, target, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if multi_label:
            per_item = _binary_focal(logits, target.to(logits.dtype), weights, gamma)
        else:
            per_item = _focal(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), weights, gamma)
        count = num_items_in_batch if num_items_in_batch is not None else (target != IGNORED).sum().clamp(min=1)
        return per_item.sum() / count

    return compute


def _focal(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """Per-item (weighted) cross-entropy times (1 - p_true)^gamma; items labelled -100 count 0. gamma 0 is plain
    weighted cross-entropy."""
    keep = target != IGNORED
    safe = target.where(keep, torch.zeros_like(target))
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -log_p * (1 - log_p.exp()).pow(gamma) if gamma else -log_p
    if weights is not None:
        loss = loss * weights.to(loss.device)[safe]
    return loss * keep


def _binary_focal(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """Per label and example BCE (positives weighted by pos_weight) times (1 - p_t)^gamma."""
    logits = logits.float()
    weight = pos_weight.to(logits.device) if pos_weight is not None else None
    loss = F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=weight, reduction="none")
    if gamma:
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        loss = loss * (1 - p_t).pow(gamma)
    return loss
