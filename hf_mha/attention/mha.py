"""Multi-head self-attention: `MultiHeadAttention.forward` is the whole algorithm in one screen, and its
attention core (`_attend`) has the reference math and the fused kernels side by side."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from hf_mha.attention.packing import Bucket, PackedBatch, flex_padding_block_mask
from hf_mha.errors import UserError

#: Names accepted by `backend=`. "auto" picks the fastest that runs on the tensors' device.
BACKENDS = ("auto", "reference", "sdpa", "flex", "varlen", "nested")


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: Q = X W^Q, K = X W^K, V = X W^V, split into `num_heads` heads of
    `head_dim`, softmax(Q K^T / sqrt(head_dim) + mask) V per head, heads concatenated.

    W^O is applied by whoever owns it in the stock layout: BERT's `attention.output.dense` runs right after
    this module, so its parameter keeps its stock name. `num_heads` and `head_dim` belong to the module,
    not the config, so layers can hold different numbers of heads once heads are pruned.

    `head_mask` ([num_heads], or None) multiplies each head's attention probabilities (transformers v4
    semantics); a mask that requires grad receives gradients, which is what head-importance scoring needs.
    With `return_probs` set (and the reference backend), forward's second output is the attention
    probabilities [B, h, L, L] at the input's token positions; otherwise it is None, as with stock sdpa.
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
        self.return_probs = False

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
        # hidden_states: [B, L, d_model] with attention_mask None or [B, L] bool (True = real token),
        #             or [1, T', d_model] holding the T real tokens (then rows that only round up the count,
        #             see packing.packed_rows), with attention_mask a PackedBatch.
        # Other kwargs are what the stock layers pass along (position_ids, ...); none of them change the maths.
        refuse_unsupported_kwargs(kwargs)
        qkv = self.project_qkv(hidden_states)  # [..., 3 * h * d_k], one GEMM when nothing wraps q/k/v
        backend = self.runnable_backend(qkv)  # judged on qkv: under autocast it is already half precision

        if isinstance(attention_mask, PackedBatch):
            batch = attention_mask
            tokens = qkv[0, : len(batch.indices)]  # [T, 3 * h * d_k]; rows after them only round up the count
            probs = None
            if backend == "varlen":  # the flash kernel takes the packed tokens as they are
                context = self._attend_varlen(tokens, batch)
            elif backend == "nested":  # so does one sdpa call over them as a nested tensor, with dropout
                context = self._attend_nested(tokens, batch)
            else:  # rectangles of similar-length sequences
                context, probs = batch.attend_in_buckets(
                    tokens, lambda rectangle, bucket: self._attend(rectangle, bucket.keep, backend, bucket)
                )
            if len(tokens) < qkv.shape[1]:  # zeros for the rounding rows, which attend to nothing
                context = F.pad(context, (0, 0, 0, qkv.shape[1] - len(tokens)))
            return context[None], probs  # [1, T', h * d_k], probs [B, h, L, L] or None

        if attention_mask is not None and attention_mask.ndim != 2:
            raise UserError(
                f"hf_mha attention expects a [batch, seq_len] padding mask, got shape {tuple(attention_mask.shape)}; "
                "if the model's attention implementation was changed after swap_attention, call swap_attention again"
            )
        if backend in ("varlen", "nested"):
            keep = attention_mask if attention_mask is not None else qkv.new_ones(qkv.shape[:2], dtype=torch.bool)
            batch = PackedBatch.from_padding_mask(keep)
            attend = self._attend_varlen if backend == "varlen" else self._attend_nested
            return batch.unpack(attend(batch.pack(qkv), batch)), None  # [B, L, h * d_k]
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

    def _attend(self, qkv, keep, backend, bucket: Bucket | None = None):
        # qkv: [B, L, 3 * h * d_k]; keep: [B, L] bool or None. Returns context [B, L, h * d_k] and, when asked
        # for and the backend is the reference, the attention probabilities [B, h, L, L].
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)  # [B, h, L, d_k]
        dropout_p = self.dropout_p if self.training else 0.0
        # .to() rather than a copy: gradients reach the caller's mask; the device follows nn.DataParallel replicas.
        head_mask = None if self.head_mask is None else self.head_mask.to(q)[None, :, None, None]
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
                with _sdpa_kernels_for(q):
                    context = F.scaled_dot_product_attention(
                        q, k, v, attn_mask=key_mask, dropout_p=dropout_p, scale=self.scale
                    )
            else:  # flex
                from torch.nn.attention.flex_attention import flex_attention

                block_mask = None
                if keep is not None:
                    block_mask = bucket.flex_block_mask if bucket is not None else flex_padding_block_mask(keep)
                context = flex_attention(q, k, v, block_mask=block_mask, scale=self.scale)
            if head_mask is not None:  # (m P) V == m (P V): mask the head's output instead of its probabilities
                context = context * head_mask
        return context.transpose(1, 2).flatten(-2), (probs if self.return_probs else None)

    def _attend_varlen(self, qkv: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        # qkv: [T, 3 * h * d_k] real tokens only -> context [T, h * d_k]
        from torch.nn.attention.varlen import varlen_attn

        q, k, v = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(1)  # [T, h, d_k]
        cu, max_len = batch.cu_seqlens, batch.max_seqlen
        context = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=self.scale)  # [T, h, d_k]
        if self.head_mask is not None:
            context = context * self.head_mask.to(context)[None, :, None]
        return context.flatten(-2)

    def _attend_nested(self, qkv: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        # qkv: [T, 3 * h * d_k] real tokens only -> context [T, h * d_k]. Sequences as a nested jagged tensor
        # [B, h, j, d_k]: on CUDA sdpa runs them in one flash (or memory-efficient) kernel call, attention
        # dropout included, which the varlen kernel lacks. max_seqlen given: sdpa need not read it off the GPU.
        q, k, v = (t.contiguous() for t in qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(1))

        def jagged(t):  # [T, h, d_k] -> [B, h, j, d_k]
            return torch.nested.nested_tensor_from_jagged(t, batch.cu_seqlens, max_seqlen=batch.max_seqlen).transpose(1, 2)

        dropout_p = self.dropout_p if self.training else 0.0
        context = F.scaled_dot_product_attention(jagged(q), jagged(k), jagged(v), dropout_p=dropout_p, scale=self.scale)
        context = context.transpose(1, 2).values()  # [T, h, d_k]
        if self.head_mask is not None:
            context = context * self.head_mask.to(context)[None, :, None]
        return context.flatten(-2)

    def runnable_backend(self, qkv: torch.Tensor) -> str:
        """The backend this call uses: `self.backend`, or for "auto" the fastest one that runs on `qkv`.
        Raises UserError naming what is missing when the chosen backend cannot run on these tensors."""
        dropout_p = self.dropout_p if self.training else 0.0
        if self.backend == "auto":
            if _varlen_missing(qkv, dropout_p, self.head_dim) is None:
                return "varlen"
            # Training with attention dropout on a GPU: the packed tokens in one sdpa call. On CPU sdpa has
            # no nested-tensor kernel (it falls back to the math path), so it attends bucket by bucket.
            return "nested" if qkv.is_cuda else "sdpa"
        if self.backend == "varlen":
            missing = _varlen_missing(qkv, dropout_p, self.head_dim)
            if missing:
                raise UserError(f"attention backend 'varlen' {missing}; or use backend='sdpa'")
        if self.backend == "flex":
            if dropout_p > 0:
                raise UserError(
                    f"attention backend 'flex' has no attention dropout, but this module trains with "
                    f"dropout {dropout_p}; set attention_probs_dropout_prob=0 in the config or use backend='sdpa'"
                )
            if qkv.device.type == "cpu" and qkv.requires_grad:
                raise UserError(
                    "attention backend 'flex' has no backward pass on CPU: run it under torch.no_grad() for "
                    "inference, on a CUDA GPU for training, or use backend='sdpa'"
                )
        return self.backend

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, dropout_p={self.dropout_p}, "
            f"backend={self.backend!r}"
        )


def _sdpa_kernels_for(q: torch.Tensor):
    """Which kernels sdpa may pick for `q`. On CPU, without attention dropout, sdpa picks its flash kernel, whose
    forward and backward on short sequences took 4-8x as long as the explicit math (bf16, 12 heads, buckets of
    6-32 sequences of 12-66 tokens); a MiniLM training step on SST-2 batches without attention dropout took
    241-245 ms that way and 154-160 ms on the math path. ALBERT trains without attention dropout, and so does
    any config that sets it to 0. Forward alone the flash kernel is the faster, so only a pass that will be
    differentiated through the attention is pinned to the math path."""
    if q.device.type == "cpu" and q.requires_grad and torch.is_grad_enabled():
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "varlen" and not torch.cuda.is_available():
        raise UserError("attention backend 'varlen' needs a CUDA GPU (torch's flash varlen kernel); use 'sdpa' on CPU")
    return backend


def _varlen_missing(qkv: torch.Tensor, dropout_p: float, head_dim: int) -> str | None:
    """What the flash varlen kernel lacks to run on these tensors, or None when it can run."""
    if not qkv.is_cuda:
        return f"needs CUDA tensors (torch's flash varlen kernel), got a {qkv.device.type} model"
    if qkv.dtype not in (torch.float16, torch.bfloat16):
        return f"needs float16 or bfloat16 activations, got {qkv.dtype} (train with bf16=True)"
    if dropout_p > 0:
        return f"has no attention dropout, but this module trains with dropout {dropout_p} (set it to 0 in the config)"
    if head_dim % 8 or head_dim > 256:
        return f"needs a head size that is a multiple of 8 and at most 256, got {head_dim}"
    return None


def refuse_unsupported_kwargs(kwargs: dict) -> None:
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


def backend_status() -> dict[str, str]:
    """What each backend can do on this machine, for `mha-ft env`."""
    cuda = torch.cuda.is_available()
    return {
        "reference": "runs (explicit math; returns attention maps)",
        "sdpa": "runs (torch scaled_dot_product_attention)",
        "flex": "runs (training and inference)" if cuda else "inference only on CPU (no backward pass there)",
        "varlen": "runs (flash varlen on packed tokens, fp16/bf16)" if cuda else "needs a CUDA GPU",
        "nested": "runs (one sdpa call over packed tokens, attention dropout included)" if cuda
        else "runs (sdpa's math path over nested tensors on CPU: for checks, not speed)",
        "auto": "varlen where it runs, else nested (training with dropout)" if cuda else "sdpa (with unpadding)",
    }
