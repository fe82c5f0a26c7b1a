"""The packed layout of an unpadded batch: real tokens only, and how attention finds its sequences in it.

The encoder runs every layer on the T real tokens of a padded [B, L] batch as one [1, T, d] row (for bf16 on
CPU, a few rows of zeros round T up: `packed_rows`). Attention still needs to know which tokens belong
together. Flash kernels take cumulative lengths (`cu_seqlens`). Kernels that want rectangles get *buckets*:
sequences of similar length padded only to the longest among them. A batch of short sentences with one long
outlier then pays for the long one once, not B times: on SST-2 batches this halves the attention time on CPU
against one [B, L_max] rectangle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: What one more bucket costs (kernel calls, moving rows), in padded query-key pairs it must save to pay off.
BUCKET_OVERHEAD = 2048
#: Bucket boundaries are searched among lengths rounded up to this, which keeps the search small for long texts.
LENGTH_GRANULE = 8
#: On CPU the layers run on the packed tokens rounded up to a multiple of this at least (see `packed_rows`).
ROW_GRANULE = 16


@dataclass
class Bucket:
    """Sequences of similar length, attended together as one padded rectangle [n, L_b]."""

    sequences: torch.Tensor  # [n] their rows in the batch, ascending
    slots: torch.Tensor  # [T_b] where their tokens go in the flattened rectangle [n * L_b], in packed order
    keep: torch.Tensor  # [n, L_b] bool, True at real tokens
    positions: torch.Tensor  # [n, L_b] each slot's token position in its input row (0 at padding)

    @functools.cached_property
    def flex_block_mask(self):
        """Built once per batch and reused by every layer."""
        return flex_padding_block_mask(self.keep)


@dataclass
class PackedBatch:
    """Where the T real tokens of a padded [B, L] batch sit once padding is dropped."""

    keep: torch.Tensor  # [B, L] bool, True at real tokens
    indices: torch.Tensor  # [T] each real token's position in the flattened [B * L]
    cu_seqlens: torch.Tensor  # [B + 1] int32: sequence i is packed[cu_seqlens[i] : cu_seqlens[i + 1]]
    max_seqlen: int
    buckets: list[Bucket]
    bucket_order: torch.Tensor | None  # [T] packed rows grouped bucket by bucket; None with one bucket
    bucket_sizes: list[int]  # tokens per bucket

    @classmethod
    def from_padding_mask(cls, keep: torch.Tensor) -> PackedBatch:
        batch_size, seq_len = keep.shape
        lengths = keep.sum(dim=1)  # [B]
        lengths_list = lengths.tolist()
        indices = keep.flatten().nonzero().squeeze(1)  # [T]
        cu_seqlens = F.pad(lengths.cumsum(dim=0, dtype=torch.int32), (1, 0))
        sequence_of_token = indices // seq_len  # [T]
        rank_in_sequence = torch.arange(len(indices), device=keep.device) - cu_seqlens[sequence_of_token]

        groups = plan_buckets(lengths_list)
        bucket_of_sequence = torch.empty(batch_size, dtype=torch.long)
        row_in_bucket = torch.empty(batch_size, dtype=torch.long)
        for b, group in enumerate(groups):
            bucket_of_sequence[group] = b
            row_in_bucket[group] = torch.arange(len(group))
        bucket_of_token = bucket_of_sequence.to(keep.device)[sequence_of_token]
        row_of_token = row_in_bucket.to(keep.device)[sequence_of_token]

        buckets, token_rows = [], []
        for b, group in enumerate(groups):
            rows = (bucket_of_token == b).nonzero().squeeze(1)  # [T_b], ascending: sequences keep batch order
            length = max(lengths_list[s] for s in group)
            slots = row_of_token[rows] * length + rank_in_sequence[rows]
            sequences = torch.tensor(group, device=keep.device)
            bucket_keep = torch.arange(length, device=keep.device) < lengths[sequences][:, None]
            positions = torch.zeros(len(group) * length, dtype=torch.long, device=keep.device)
            positions[slots] = indices[rows] % seq_len
            buckets.append(Bucket(sequences, slots, bucket_keep, positions.view(len(group), length)))
            token_rows.append(rows)
        bucket_order = torch.cat(token_rows) if len(buckets) > 1 else None
        return cls(keep, indices, cu_seqlens, max(lengths_list), buckets, bucket_order, [len(r) for r in token_rows])

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] -> [T, ...]"""
        return GatherRows.apply(padded.flatten(0, 1), self.indices)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """[T, ...] -> [B, L, ...], zeros at padding."""
        return ScatterRows.apply(packed, self.indices, self.keep.numel()).unflatten(0, self.keep.shape)

    def attend_in_buckets(self, packed: torch.Tensor, attend: Callable) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run `attend(rectangle [n, L_b, ...], bucket) -> (context [n, L_b, ...], probs or None)` on each bucket
        of the packed rows [T, ...]; returns the context re-packed [T, ...] and the attention maps, if any,
        at the input's positions [B, h, L, L]."""
        rows = packed if self.bucket_order is None else GatherRows.apply(packed, self.bucket_order)
        contexts, probs = [], []
        for bucket, bucket_rows in zip(self.buckets, rows.split(self.bucket_sizes)):
            rectangle = ScatterRows.apply(bucket_rows, bucket.slots, bucket.keep.numel())
            rectangle = rectangle.unflatten(0, bucket.keep.shape)  # [n, L_b, ...]
            context, bucket_probs = attend(rectangle, bucket)
            contexts.append(GatherRows.apply(context.flatten(0, 1), bucket.slots))
            probs.append(bucket_probs)
        context = torch.cat(contexts)
        if self.bucket_order is not None:
            context = ScatterRows.apply(context, self.bucket_order, len(context))
        return context, (None if probs[0] is None else self._probs_at_input_positions(probs))

    def _probs_at_input_positions(self, bucket_probs: list[torch.Tensor]) -> torch.Tensor:
        batch_size, seq_len = self.keep.shape
        maps = bucket_probs[0].new_zeros(batch_size, seq_len, seq_len, bucket_probs[0].shape[1])  # heads last
        for bucket, probs in zip(self.buckets, bucket_probs):  # probs: [n, h, L_b, L_b]
            r, q, k = (bucket.keep[:, :, None] & bucket.keep[:, None, :]).nonzero(as_tuple=True)
            cells = (bucket.sequences[r], bucket.positions[r, q], bucket.positions[r, k])
            maps[cells] = probs.permute(0, 2, 3, 1)[r, q, k]
        return maps.permute(0, 3, 1, 2)  # [B, h, L, L]


def packed_rows(num_tokens: int, device: torch.device, matmul_dtype: torch.dtype) -> int:
    """How many rows the layers run on for `num_tokens` packed real tokens: on CPU with 16-bit matrix products,
    rounded up to one of 16 lengths per doubling (a multiple of ROW_GRANULE at least), so at most 1/16 more
    rows; otherwise as many.

    Why: oneDNN, which runs torch's 16-bit CPU matrix products, JIT-builds a kernel for every new shape and keeps
    the last 1,024. The count of real tokens changes with every batch, so unpadded bf16 training met a new row
    count in nearly every step and built about 14 kernels a step (forward and backward products of every layer
    shape), each costing about as much as the product itself (ONEDNN_VERBOSE=profile shows the misses).
    Rounded, a run meets a few dozen row counts and, after its first steps, builds nothing. fp32 products go to
    MKL, which builds nothing per shape, and GPU libraries pick kernels they already have: there the rounding
    rows would be pure cost (3 % on a MiniLM fp32 step), so nothing is rounded."""
    if device.type != "cpu" or matmul_dtype == torch.float32 or num_tokens == 0:
        return num_tokens
    step = max(ROW_GRANULE, 1 << max(0, num_tokens.bit_length() - 5))
    return -(-num_tokens // step) * step


def plan_buckets(lengths: list[int]) -> list[list[int]]:
    """Group the non-empty sequences so that the padded attention area sum(n_b * L_b^2), plus
    BUCKET_OVERHEAD per bucket, is least: an exact search over runs of the length-sorted sequences
    that start where the length, rounded up to LENGTH_GRANULE, changes."""
    by_length = sorted((s for s, n in enumerate(lengths) if n > 0), key=lambda s: -lengths[s])
    if not by_length:
        return []
    granule = [-(-lengths[s] // LENGTH_GRANULE) for s in by_length]
    cuts = [0] + [i for i in range(1, len(by_length)) if granule[i] != granule[i - 1]] + [len(by_length)]
    best = [0.0] + [float("inf")] * (len(cuts) - 1)  # best[j]: cheapest grouping of by_length[:cuts[j]]
    start_of = [0] * len(cuts)
    for j in range(1, len(cuts)):
        for i in range(j):
            longest = lengths[by_length[cuts[i]]]
            cost = best[i] + (cuts[j] - cuts[i]) * longest**2 + BUCKET_OVERHEAD
            if cost < best[j]:
                best[j], start_of[j] = cost, i
    groups, j = [], len(cuts) - 1
    while j > 0:
        groups.append(sorted(by_length[cuts[start_of[j]] : cuts[j]]))
        j = start_of[j]
    return groups[::-1]


# Gathering rows and scattering them into zeros are each other's backward. Autograd's own backward for a gather
# is index_add, which must allow repeated indices and is tens of times slower on CPU than index_put_; these
# indices never repeat, so a plain put is exact.
class GatherRows(torch.autograd.Function):
    """source[index] for an index without repeats: [N, ...] -> [len(index), ...]"""

    @staticmethod
    def forward(ctx, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = source.shape[0]
        return source.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return _put_rows(grad, index, ctx.num_rows), None


class ScatterRows(torch.autograd.Function):
    """Zeros [num_rows, ...] with rows[i] put at index[i], for an index without repeats."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        return _put_rows(rows, index, num_rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def _put_rows(rows: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    return rows.new_zeros(num_rows, *rows.shape[1:]).index_put_((index,), rows)


def flex_padding_block_mask(keep: torch.Tensor):
    """FlexAttention BlockMask letting every query of row b attend to the real keys of row b ([B, L] bool)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def key_is_real(b, h, q_idx, kv_idx):
        return keep[b, kv_idx]

    batch_size, seq_len = keep.shape
    return create_block_mask(key_is_real, batch_size, None, seq_len, seq_len, device=keep.device)
