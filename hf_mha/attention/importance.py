"""Head importance, after Michel et al. 2019 ("Are Sixteen Heads Really Better than One?").

A head mask of ones multiplies every head's output; the importance of head h is the expected |dL/dmask_h|
over a dataset: the first-order estimate of how much the loss moves when the head is removed. Like the
paper's code, scores are then divided by their per-layer L2 norm (so layers with large gradients do not take
all the pruning), and optionally min-max scaled across the whole model.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from hf_mha.attention.head_masks import attention_modules, masked_heads
from hf_mha.attention.pruning import kept_heads
from hf_mha.errors import UserError


def head_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    normalize_layers: bool = True,
    normalize_global: bool = False,
) -> torch.Tensor:
    """Importance of every head of a swapped model: a [modules, heads] float tensor (one row per
    `attention_modules` entry, so per layer, or per shared group for ALBERT; columns are the original head
    indices, NaN at heads already pruned).

    `batches` yields model inputs with labels (what a task's collator gives on training features), so the
    model's forward returns the loss. Runs in eval mode (no dropout noise in the gradients), leaves the
    parameters' .grad untouched and restores the training mode and head masks afterwards.
    """
    modules = attention_modules(model)
    kept = kept_heads(model)
    device = next(model.parameters()).device
    accepted = set(inspect.signature(model.forward).parameters)
    mask = [torch.ones(m.num_heads, device=device, requires_grad=True) for m in modules]
    totals = [torch.zeros(m.num_heads, device=device) for m in modules]
    count = 0
    was_training = model.training
    model.eval()
    try:
        with masked_heads(model, mask):
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch.items() if k in accepted and torch.is_tensor(v)}
                loss = model(**inputs).loss
                if loss is None:
                    raise UserError(
                        "head importance needs the loss: the batches carry no labels (labels, or start_positions "
                        "and end_positions for QA); score a labelled split or file"
                    )
                for total, grad in zip(totals, torch.autograd.grad(loss, mask)):
                    total += grad.abs()
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise UserError("head importance: no batches to score; give a non-empty labelled split or file")

    importance = torch.full((len(modules), model.config.num_attention_heads), float("nan"))
    for row, (heads, total) in enumerate(zip(kept, totals)):
        importance[row, heads] = total.cpu() / count
    if normalize_layers:
        norms = importance.nan_to_num().pow(2).sum(dim=1, keepdim=True).sqrt()
        importance = importance / (norms + 1e-20)
    if normalize_global:
        held = importance[~importance.isnan()]
        low, high = held.min(), held.max()
        importance = (importance - low) / (high - low + 1e-20)
    return importance
