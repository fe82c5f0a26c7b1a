"""Multi-head self-attention, and the packed batch layout the unpadded encoder runs on.

`MultiHeadAttention.forward` is the whole algorithm in one screen; the attention core (`_attend`) has the
reference math and the fused kernels side by side, and `PackedBatch` moves tensors between the padded
[B, L] layout that HF heads expect and the packed [T] layout of real tokens only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hf_mha.errors import UserError

#: Names accepted by `backend=`. "auto" picks the fastest that runs on the tensors' device.
BACKENDS = ("auto", "reference", "sdpa", "flex", "varlen")


@dataclass
class PackedBatch:
    """Where the T real tokens of a padded [B, L] batch are, once padding has been dropped.

    The encoder runs its layers on the real tokens as one [1, T, d] row. Attention still needs to know which
    tokens belong together: flash kernels take cumulative lengths (`cu_seqlens`); kernels that want
    rectangles get a compact padded layout [B, L_max], where L_max is the longest real length (often far
    below L when a collator pads to a fixed length, and tokens of left-padded rows move to the front).
    """

    keep: torch.Tensor  # [B, L] bool, True at real tokens
    indices: torch.Tensor  # [T] position of each real token in the flattened [B * L]
    compact_indices: torch.Tensor  # [T] position of each real token in the flattened [B * L_max]
    compact_keep: torch.Tensor  # [B, L_max] bool
    cu_seqlens: torch.Tensor  # [B + 1] int32, sequence i is packed[cu_seqlens[i]:cu_seqlens[i + 1]]
    max_seqlen: int

    @classmethod
    def from_padding_mask(cls, keep: torch.Tensor) -> PackedBatch:
        batch_size, seq_len = keep.shape
        lengths = keep.sum(dim=1)  # [B]
        max_seqlen = int(lengths.max())
        indices = keep.flatten().nonzero().squeeze(1)  # [T]
        rank_in_sequence = (keep.cumsum(dim=1) - 1).flatten()[indices]  # [T]
        compact_indices = (indices // seq_len) * max_seqlen + rank_in_sequence
        compact_keep = torch.arange(max_seqlen, device=keep.device) < lengths[:, None]
        cu_seqlens = F.pad(lengths.cumsum(dim=0, dtype=torch.int32), (1, 0))
        return cls(keep, indices, compact_indices, compact_keep, cu_seqlens, max_seqlen)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] -> [T, ...]"""
        return padded.flatten(0, 1).index_select(0, self.indices)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """[T, ...] -> [B, L, ...], zeros at padding."""
        return _scatter_rows(packed, self.indices, self.keep.numel()).unflatten(0, self.keep.shape)

    def to_compact(self, packed: torch.Tensor) -> torch.Tensor:
        """[T, ...] -> [B, L_max, ...], zeros at padding."""
        return _scatter_rows(packed, self.compact_indices, self.compact_keep.numel()).unflatten(
            0, self.compact_keep.shape
        )

    def from_compact(self, compact: torch.Tensor) -> torch.Tensor:
        """[B, L_max, ...] -> [T, ...]"""
        return compact.flatten(0, 1).index_select(0, self.compact_indices)

    def compact_probs_to_input(self, probs: torch.Tensor) -> torch.Tensor:
        """Attention maps [B, h, L_max, L_max] -> [B, h, L, L] at the input's token positions, zeros at padding."""
        batch_size, num_heads = probs.shape[:2]
        seq_len = self.keep.shape[1]
        real_in_input = (self.keep[:, None, :, None] & self.keep[:, None, None, :]).expand(-1, num_heads, -1, -1)
        real_in_compact = (self.compact_keep[:, None, :, None] & self.compact_keep[:, None, None, :]).expand(
            -1, num_heads, -1, -1
        )
        # Real tokens keep their order inside each sequence, so both masks enumerate the same (b, h, q, k) cells.
        return probs.new_zeros(batch_size, num_heads, seq_len, seq_len).masked_scatter(
            real_in_input, probs[real_in_compact]
        )

    @functools.cached_property
    def flex_block_mask(self):
        """FlexAttention mask for the compact layout, built once per batch rather than once per layer."""
        return _flex_padding_block_mask(self.compact_keep)


def _scatter_rows(rows: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    return rows.new_zeros(num_rows, *rows.shape[1:]).index_put((index,), rows)


def _flex_padding_block_mask(keep: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask

    def key_is_real(b, h, q_idx, kv_idx):
        return keep[b, kv_idx]

    batch_size, seq_len = keep.shape
    return create_block_mask(key_is_real, batch_size, None, seq_len, seq_len, device=keep.device)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: Q = X W^Q, K = X W^K, V = X W^V, split into `num_heads` heads of
    `head_dim`, softmax(Q K^T / sqrt(head_dim) + mask) V per head, heads concatenated.

    W^O is applied by whoever owns it in the stock layout: BERT's `attention.output.dense` runs right after
    this module, so its parameter keeps its stock name. `num_heads` and `head_dim` belong to the module,
    not the config, so layers can hold different numbers of heads once heads are pruned.

    `head_mask` ([num_heads], or None) multiplies each head's attention probabilities (transformers v4
    semantics); a mask that requires grad receives gradients, which is what head-importance scoring needs.
    """

    #: Attribute names of W^Q, W^K, W^V: the stock model's, so state-dict keys and PEFT `target_modules` match.
    qkv_names = ("query", "key", "value")

    def __init__(
        self,
        query: nn.Module,
        key: nn.Module,
        value: nn.Module,
        *,
        num_heads: int,
        head_dim: int,
        dropout_p: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        for name, projection in zip(self.qkv_names, (query, key, value)):
            self.add_module(name, projection)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.dropout_p = dropout_p
        self.backend = check_backend(backend)
        self.head_mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
        # hidden_states: [B, L, d_model] with attention_mask None or [B, L] bool (True = real token),
        #             or [1, T, d_model] holding only the T real tokens, with attention_mask a PackedBatch.
        # Other kwargs are what the stock layers pass along (position_ids, ...); none of them change the maths.
        _refuse_unsupported_kwargs(kwargs)
        backend = self.runnable_backend(hidden_states)
        qkv = self.project_qkv(hidden_states)  # [..., 3 * h * d_k], one GEMM when nothing wraps q/k/v

        if isinstance(attention_mask, PackedBatch):
            batch = attention_mask
            if backend == "varlen":  # flash kernel works on the packed tokens directly
                return self._attend_varlen(qkv[0], batch)[None], None  # [1, T, h * d_k]
            compact_context, probs = self._attend(batch.to_compact(qkv[0]), batch.compact_keep, backend, batch)
            if probs is not None:
                probs = batch.compact_probs_to_input(probs)
            return batch.from_compact(compact_context)[None], probs  # [1, T, h * d_k]

        if attention_mask is not None and attention_mask.ndim != 2:
            raise UserError(
                f"hf_mha attention expects a [batch, seq_len] padding mask, got shape {tuple(attention_mask.shape)}; "
                "if the model's attention implementation was changed after swap_attention, call swap_attention again"
            )
        if backend == "varlen":
            keep = attention_mask if attention_mask is not None else qkv.new_ones(qkv.shape[:2], dtype=torch.bool)
            batch = PackedBatch.from_padding_mask(keep)
            return batch.unpack(self._attend_varlen(batch.pack(qkv), batch)), None  # [B, L, h * d_k]
        return self._attend(qkv, attention_mask, backend)  # [B, L, h * d_k], probs or None

    def projections(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.qkv_names]

    def project_qkv(self, hidden_states: torch.Tensor) -> torch.Tensor:
        q_proj, k_proj, v_proj = self.projections()
        if all(type(p) is nn.Linear and p.bias is not None for p in (q_proj, k_proj, v_proj)):
            # Concatenating the weights costs O(d^2) per call against the GEMM's O(T d^2), and unlike a stored
            # fused weight it keeps query/key/value as separate Linear modules for state dicts and PEFT.
            weight = torch.cat([q_proj.weight, k_proj.weight, v_proj.weight])  # [3 * h * d_k, d_model]
            bias = torch.cat([q_proj.bias, k_proj.bias, v_proj.bias])
            return F.linear(hidden_states, weight, bias)
        # A PEFT layer (LoRA, IA3, ...) wraps at least one projection: call each so its adapter runs.
        return torch.cat([q_proj(hidden_states), k_proj(hidden_states), v_proj(hidden_states)], dim=-1)

    def _attend(self, qkv, keep, backend, batch: PackedBatch | None = None):
        # qkv: [B, L, 3 * h * d_k]; keep: [B, L] bool or None. Returns context [B, L, h * d_k] and, for the
        # reference backend, the attention probabilities [B, h, L, L].
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)  # [B, h, L, d_k]
        dropout_p = self.dropout_p if self.training else 0.0
        head_mask = None if self.head_mask is None else self.head_mask.to(q.dtype)[None, :, None, None]
        probs = None
        if backend == "reference":
            scores = q @ k.transpose(-2, -1) * self.scale  # [B, h, L, L]
            if keep is not None:  # the finite minimum, as stock eager uses, keeps all-padding rows NaN-free
                scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
            probs = F.dropout(scores.softmax(dim=-1), dropout_p)
            if head_mask is not None:
                probs = probs * head_mask
            context = probs @ v  # [B, h, L, d_k]
        else:
            if backend == "sdpa":
                key_mask = None if keep is None else keep[:, None, None, :]  # [B, 1, 1, L]: same for every query
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p, scale=self.scale)
            else:  # flex
                from torch.nn.attention.flex_attention import flex_attention

                block_mask = None
                if keep is not None:
                    block_mask = batch.flex_block_mask if batch is not None else _flex_padding_block_mask(keep)
                context = flex_attention(q, k, v, block_mask=block_mask, scale=self.scale)
            if head_mask is not None:  # (m P) V == m (P V): mask the head's output instead of its probabilities
                context = context * head_mask
        return context.transpose(1, 2).flatten(-2), probs

    def _attend_varlen(self, qkv: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        # qkv: [T, 3 * h * d_k] real tokens only -> context [T, h * d_k]
        from torch.nn.attention.varlen import varlen_attn

        q, k, v = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(1)  # [T, h, d_k]
        cu, max_len = batch.cu_seqlens, batch.max_seqlen
        context = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=self.scale)  # [T, h, d_k]
        if self.head_mask is not None:
            context = context * self.head_mask.to(context.dtype)[None, :, None]
        return context.flatten(-2)

    def runnable_backend(self, hidden_states: torch.Tensor) -> str:
        """The backend this call uses: `self.backend`, or for "auto" the fastest one that runs here.
        Raises UserError naming what is missing when the chosen backend cannot run on these tensors."""
        dropout_p = self.dropout_p if self.training else 0.0
        if self.backend == "auto":
            return "varlen" if _varlen_missing(hidden_states, dropout_p, self.head_dim) is None else "sdpa"
        if self.backend == "varlen":
            missing = _varlen_missing(hidden_states, dropout_p, self.head_dim)
            if missing:
                raise UserError(f"attention backend 'varlen' {missing}; or use backend='sdpa'")
        if self.backend == "flex":
            if dropout_p > 0:
                raise UserError(
                    f"attention backend 'flex' has no attention dropout, but this module trains with "
                    f"dropout {dropout_p}; set attention_probs_dropout_prob=0 in the config or use backend='sdpa'"
                )
            if hidden_states.device.type == "cpu" and torch.is_grad_enabled() and hidden_states.requires_grad:
                raise UserError(
                    "attention backend 'flex' has no backward pass on CPU: run it under torch.no_grad() for "
                    "inference, on a CUDA GPU for training, or use backend='sdpa'"
                )
        return self.backend

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, dropout_p={self.dropout_p}, backend={self.backend!r}"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "varlen" and not torch.cuda.is_available():
        raise UserError("attention backend 'varlen' needs a CUDA GPU (torch's flash varlen kernel); use 'sdpa' on CPU")
    return backend


def _varlen_missing(hidden_states: torch.Tensor, dropout_p: float, head_dim: int) -> str | None:
    """What the flash varlen kernel lacks to run on these tensors, or None when it can run."""
    if not hidden_states.is_cuda:
        return f"needs CUDA tensors (torch's flash varlen kernel), got a {hidden_states.device.type} model"
    if hidden_states.dtype not in (torch.float16, torch.bfloat16):
        return f"needs float16 or bfloat16 activations, got {hidden_states.dtype} (train with bf16=True)"
    if dropout_p > 0:
        return f"has no attention dropout, but this module trains with dropout {dropout_p} (set it to 0 in the config)"
    if head_dim % 8 or head_dim > 256:
        return f"needs a head size that is a multiple of 8 and at most 256, got {head_dim}"
    return None


def _refuse_unsupported_kwargs(kwargs: dict) -> None:
    if kwargs.get("past_key_values") is not None:
        raise UserError(
            "hf_mha attention does not take past_key_values (prefix tuning or a decoder cache); "
            "keep the stock attention (model.attention: stock) for prefix tuning"
        )
    if kwargs.get("output_attentions"):
        raise UserError(
            "output_attentions=True is not available with hf_mha attention; "
            "use `with hf_mha.attention.attention_probs(model) as maps:` to collect attention maps"
        )
