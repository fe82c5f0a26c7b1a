"""Heads as objects: per-head masks and attention maps on a swapped model.

transformers v5 dropped `head_mask` from the forward signatures, so masks live on our modules instead: one
row per attention module, in layer order. That is one row per layer, except for ALBERT, whose layers share
one module per group (`num_hidden_groups * inner_group_num` rows, usually 1) - a mask row, like a pruned
head, applies wherever that module runs. Rows may differ in length once heads are pruned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from hf_mha.attention.mha import MultiHeadAttention
from hf_mha.errors import UserError


def attention_modules(model: nn.Module) -> list[MultiHeadAttention]:
    """The `MultiHeadAttention` modules of a swapped model, in layer order (shared modules once)."""
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not modules:
        raise UserError(
            f"{type(model).__name__} has no hf_mha attention modules; call hf_mha.attention.swap_attention(model) first"
        )
    return modules


def set_head_mask(model: nn.Module, head_mask: torch.Tensor | Sequence[torch.Tensor] | None) -> None:
    """Multiply each head's attention probabilities by `head_mask[module][head]` (1 keeps, 0 removes).

    `head_mask` is a [num_modules, num_heads] tensor, or one [num_heads_i] tensor per module; None clears.
    Rows are used as given (not copied), so a mask that requires grad collects gradients per head.
    """
    modules = attention_modules(model)
    if head_mask is None:
        for module in modules:
            module.head_mask = None
        return
    expected = [m.num_heads for m in modules]
    got = [tuple(row.shape) for row in head_mask]
    if len(got) != len(expected) or any(shape != (n,) for shape, n in zip(got, expected)):
        raise UserError(
            f"head_mask must have one row per attention module with that module's number of heads, "
            f"i.e. row lengths {expected}; got rows of shapes {got}"
        )
    for module, row in zip(modules, head_mask):
        module.head_mask = row


@contextmanager
def masked_heads(model: nn.Module, head_mask: torch.Tensor | Sequence[torch.Tensor] | None) -> Iterator[None]:
    """`set_head_mask` for the duration of a `with` block; the previous masks come back afterwards."""
    previous = [m.head_mask for m in attention_modules(model)]
    set_head_mask(model, head_mask)
    try:
        yield
    finally:
        for module, row in zip(attention_modules(model), previous):
            module.head_mask = row


@contextmanager
def attention_probs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect attention maps: inside the block every attention call appends its probabilities
    [B, num_heads, L, L] (query x key, at the input's token positions) to the yielded list.

    The modules run the reference backend meanwhile, since fused kernels never materialise the maps. With
    unpadding, rows and columns of padding tokens are zero. ALBERT's shared module appends once per layer.
    """
    modules = attention_modules(model)
    maps: list[torch.Tensor] = []
    backends = [m.backend for m in modules]

    def record(module, args, output):
        maps.append(output[1])

    hooks = [m.register_forward_hook(record) for m in modules]
    for module in modules:
        module.backend, module.return_probs = "reference", True
    try:
        yield maps
    finally:
        for module, backend, hook in zip(modules, backends, hooks):
            module.backend, module.return_probs = backend, False
            hook.remove()
