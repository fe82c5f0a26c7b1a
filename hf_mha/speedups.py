"""What makes training fast by default, where the profile (`mha-ft bench --profile`, docs/benchmarks.md) showed
the time goes once our attention skips the padding:

- bf16 mixed precision (`train.bf16: auto`): bf16 autocast, fp32 master weights, on GPUs with bf16 and on CPUs
  whose matrix units multiply bf16 natively (AVX-512 BF16 or AMX), where oneDNN runs bf16 GEMMs 3-4x faster
  than fp32. Elsewhere bf16 is emulated and slower, so auto means fp32 there.
- `train.torch_compile: true` with our attention compiles the dense blocks between the attention calls
  (`compile_dense_blocks`), with dynamic shapes, since the unpadded encoder's token count changes every batch:
  compiling the whole model recompiles for each new shape. Measured on the 2-core CPU it is slower than eager
  (docs/benchmarks.md), so it is an option, off by default.
- Row-sparse (lazy) AdamW updates of the word embeddings (`train.lazy_embeddings`): a batch of 32 sentences
  touches a few hundred of MiniLM's 30,522 embedding rows, yet a dense gradient allocates, zero-fills and
  clips the whole 30,522 x 384 matrix every step and AdamW reads and writes it four times over. With the
  embedding's `sparse=True` its gradient holds only the touched rows, and `LazyEmbeddingAdamW` updates those.
- Cheaper dropout masks on CPU (`train.fast_dropout`): torch's CPU dropout draws one double-precision uniform
  per element, serially; `FastDropout` cuts each 64-bit draw into four 15-bit numbers.
"""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path

import torch
from torch import nn

#: The optimizer classes LazyEmbeddingAdamW stands in for (the Trainer's adamw_torch and adamw_torch_fused).
DENSE_ADAMW = (torch.optim.AdamW,)


# --------------------------------------------------------------------------------------------------- bf16


@functools.cache
def cpu_bf16_units() -> str | None:
    """The CPU's native bf16 matrix instructions ("AMX" or "AVX-512 BF16"), or None when it has neither."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    # torch's own probes (private, hence guarded) also cover systems without /proc/cpuinfo.
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if "amx_bf16" in flags or (probe is not None and probe()):
        return "AMX"
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if "avx512_bf16" in flags or (probe is not None and probe()):
        return "AVX-512 BF16"
    return None


def auto_precision(use_cpu: bool = False) -> dict[str, bool]:
    """TrainingArguments' precision flags for `train.bf16: auto` on this machine: bf16 on a GPU that has it
    (fp16 on one that does not), bf16 on a CPU with native bf16 units, fp32 (no flag) otherwise."""
    if torch.cuda.is_available() and not use_cpu:
        return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
    return {"bf16": True} if cpu_bf16_units() else {}


def precision_summary() -> str:
    """One line for `mha-ft env`: what `train.bf16: auto` picks here, and why."""
    if torch.cuda.is_available():
        picked = "bf16" if torch.cuda.is_bf16_supported() else "fp16 (this GPU has no bf16)"
        return f"{picked} autocast on {torch.cuda.get_device_name()}"
    units = cpu_bf16_units()
    if units:
        return f"bf16 autocast (fp32 master weights): this CPU multiplies bf16 natively ({units})"
    return "fp32: this CPU has no native bf16 units (AVX-512 BF16 or AMX), where bf16 would be slower"


# ------------------------------------------------------------------------------------- lazy embeddings


def word_embeddings(model: nn.Module) -> nn.Embedding | None:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return embeddings if isinstance(embeddings, nn.Embedding) else None


def lazy_embedding_optimizer(model: nn.Module, args, chosen: tuple[type, dict] | None):
    """The optimizer (class, kwargs) to train `model` with: `chosen` (or the Trainer's own for `args`) with
    row-sparse updates of the word embeddings where they apply, and the embedding switched to sparse
    gradients for it; `chosen` unchanged where they do not: embeddings frozen (PEFT) or tied to another
    weight, an optimizer other than AdamW or AdamW's amsgrad, fp16 (the grad scaler's unscale is dense only)
    and more than one process (sparse gradients would need DDP's sparse all-reduce)."""
    from transformers import Trainer

    embeddings = word_embeddings(model)
    if embeddings is None or not embeddings.weight.requires_grad or args.fp16 or args.world_size > 1:
        return chosen
    if any(p is embeddings.weight for name, p in model.named_parameters(remove_duplicate=False)
           if not name.endswith("word_embeddings.weight")):
        return chosen  # tied (e.g. to an MLM decoder): that use needs the dense gradient
    optimizer_class, kwargs = chosen or Trainer.get_optimizer_cls_and_kwargs(args, model)
    if optimizer_class not in DENSE_ADAMW or kwargs.get("amsgrad") or kwargs.get("maximize"):
        return chosen
    embeddings.sparse = True
    return LazyEmbeddingAdamW, kwargs


def dense_embeddings(model: nn.Module) -> None:
    """Back to dense embedding gradients (after training: a model in use elsewhere behaves as loaded)."""
    embeddings = word_embeddings(model)
    if embeddings is not None:
        embeddings.sparse = False


class LazyEmbeddingAdamW(torch.optim.AdamW):
    """AdamW (decoupled weight decay), with parameters whose gradient is sparse (the word embeddings) updated
    on the rows the gradient holds only, as TensorFlow's LazyAdam and torch's SparseAdam do.

    How it differs from dense AdamW, row by row: a row absent from a step's batches is left as it is, where
    dense AdamW would still move it by its decaying first moment and shrink it by weight decay; a row's
    moments advance only on the steps that touch it, while the bias correction counts every step. Rows seen
    every step (special tokens, frequent words) are updated exactly as by AdamW. Every other parameter goes
    through AdamW itself (fused, as the Trainer's default). The state keeps AdamW's keys and shapes, so
    checkpoints resume under either optimizer.
    """

    def step(self, closure=None):
        sparse = []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and param.grad.is_sparse:
                    self._update_rows(param, param.grad, group)
                    sparse.append((param, param.grad))
                    param.grad = None  # AdamW skips parameters without a gradient
        try:
            return super().step(closure)
        finally:
            for param, grad in sparse:
                param.grad = grad

    @torch.no_grad()
    def _update_rows(self, param: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()  # [n], [n, d]: each touched row once
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        state["step"] += 1
        step = state["step"]  # a tensor: the bias corrections stay on the device, no host sync
        exp_avg = state["exp_avg"].index_select(0, rows).mul_(beta1).add_(values, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step).sqrt()
        denominator = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        weights = param.index_select(0, rows).mul_(1 - lr * weight_decay)
        weights.sub_(exp_avg / denominator * (lr / bias_correction1))
        param.index_copy_(0, rows, weights)


# ---------------------------------------------------------------------------------------- dropout masks

#: Random bits per element of a FastDropout mask: p is rounded to a multiple of 2^-15 (0.1 -> 0.1000061).
MASK_BITS = 15


class FastDropout(nn.Dropout):
    """nn.Dropout whose training mask on CPU costs a quarter of a random draw per element.

    Why: torch's CPU dropout fills its mask with `bernoulli_`, one double-precision uniform per element drawn
    serially (5-7 ns an element on the 2-core EPYC), which was 12 % of a MiniLM bf16 training step there
    (docs/benchmarks.md). Here one 64-bit draw gives four 15-bit numbers, and an element is kept where its
    number is at least p * 2^15, so the mask has dropout's distribution with p rounded to a multiple of 2^-15;
    the draws come from torch's generator, so a seed reproduces them. Where that does not apply (not training,
    not on CPU, under torch.compile, which makes its own masks, in-place dropout, or a p the rounding would move
    by more than 0.1 %) it is nn.Dropout itself."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        threshold = round(self.p * 2**MASK_BITS)
        if (not self.training or input.device.type != "cpu" or self.inplace or torch.compiler.is_compiling()
                or not 0 < threshold < 2**MASK_BITS or abs(threshold / 2**MASK_BITS - self.p) > 1e-3 * self.p):
            return super().forward(input)
        return _KeepScaled.apply(input, keep_mask(input.shape, threshold), 2**MASK_BITS / (2**MASK_BITS - threshold))


def keep_mask(shape: torch.Size, threshold: int) -> torch.Tensor:
    """Bool [shape], True where a uniform 15-bit number is >= threshold (CPU)."""
    count = math.prod(shape)
    words = torch.empty(-(-count // 4), dtype=torch.int64).random_()  # 63 random bits: the 4th 16-bit piece has 15
    return (words.view(torch.int16)[:count].view(shape) & (2**MASK_BITS - 1)) >= threshold


class _KeepScaled(torch.autograd.Function):
    """input * scale where keep, 0 elsewhere; keeps only the bool mask for backward, as torch's dropout does."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, input * scale, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0), None, None


def fast_dropout(model: nn.Module) -> int:
    """Make every plain nn.Dropout of `model` a FastDropout, in place (nothing in the state dict changes, and
    outside CPU training it is the same module); returns how many."""
    dropouts = [module for module in model.modules() if type(module) is nn.Dropout]
    for module in dropouts:
        module.__class__ = FastDropout
    return len(dropouts)


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (L2) for a mix of dense and sparse gradients, which torch's cannot
    take: the norm of a sparse gradient is that of its coalesced rows (the Trainer clips after the last
    micro-batch, when one row may appear once per micro-batch). `max_norm` inf: the norm only."""
    grads = []
    for param in parameters:
        if param.grad is None:
            continue
        if param.grad.is_sparse:
            param.grad = param.grad.coalesce()
            grads.append(param.grad.values())
        else:
            grads.append(param.grad)
    if not grads:
        return torch.zeros(())
    total = torch.nn.utils.get_total_norm(grads)
    if max_norm != float("inf"):
        scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # as torch clips: no host sync on the comparison
        for grad in grads:
            grad.mul_(scale)
    return total


def has_sparse_grads(model: nn.Module) -> bool:
    embeddings = word_embeddings(model)
    return embeddings is not None and embeddings.sparse and embeddings.weight.grad is not None


def compile_dense_blocks(model: nn.Module) -> int:
    """`torch.compile(dynamic=True)` in place on every largest block of the model that holds weights but
    neither our attention nor an embedding (BERT: attention output, intermediate, output of each layer; the
    pooler and the head), so our attention and its per-batch plan stay eager. The parameter names do not
    change (nn.Module.compile). Returns how many blocks it compiled."""
    from .attention import MultiHeadAttention

    def holds(module: nn.Module, kinds) -> bool:
        return any(isinstance(m, kinds) for m in module.modules())

    compiled = 0

    def visit(module: nn.Module) -> None:
        nonlocal compiled
        for child in module.children():
            if isinstance(child, (MultiHeadAttention, nn.Embedding)):
                continue
            if holds(child, (MultiHeadAttention, nn.Embedding)):
                visit(child)
            elif any(True for _ in child.parameters()):
                child.compile(dynamic=True)
                compiled += 1

    visit(model)
    return compiled
