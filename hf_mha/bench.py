"""`mha-ft bench`: how fast our attention is against stock transformers, measured in one process.

Two sections, each a ratio against stock transformers `sdpa` run on the same weights and the same batches:

- attention: whole encoder layers (a random-init `BertModel`) forward, and forward + backward, over padded
  widths and padding ratios, for stock `eager` and `sdpa` and each of our backends padded and unpadded;
- train_step: a sequence-classification model doing forward + backward + AdamW step on batches of 32 with
  dynamic padding, stock `sdpa` against ours (backend auto, unpadded), and a step of the encoder's matrix
  products alone, whose MFU bounds what any implementation reaches here. Its lengths are the tokenized texts of
  a data file given as `lengths_from` (`--lengths-from`), or without one a built-in fit of SST-2's lengths.

Implementations take turns repeat by repeat, in an order that reverses every repeat, so load from other jobs
on a shared machine and any drift over the run hit all of them alike. Ratios are medians of per-repeat ratios
of neighbouring steps on the same batch, which cancels most of that load; tokens/s counts real (non-pad)
tokens only, so the work saved by skipping padding shows as speed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel
from transformers.utils import is_flash_attn_2_available

from hf_mha.attention import BACKENDS
from hf_mha.bench_measure import (
    BASELINE, LENGTH_FITS, SIZES, TEXT_COLUMN, VOCAB_SIZE, Record, bert_config, autocast_for, backend_used,
    classification_batches, dense_bf16_peak, forward_backward_step, forward_step, interleaved_timings,
    lengths_with_padding, make_records, matmul_params, matmuls_alone_step, measured_gemm_peak, our_model,
    padded_batch, sample_lengths, stock_model, train_step, useful_flops, uses_bf16,
)
from hf_mha.speedups import LazyEmbeddingAdamW, fast_dropout, word_embeddings
from hf_mha.errors import UserError

__all__ = [
    "BenchSettings", "check_settings", "default_settings", "lengths_with_padding", "print_report",
    "resolve_settings", "run_bench", "sample_lengths",
]

#: The attention section times the layers; with the full vocabulary its dense embedding gradient
#: (vocab x hidden, the same for every implementation) would only dilute the differences.
ATTENTION_VOCAB_SIZE = 1024

STOCK_IMPLEMENTATIONS = ("eager", "sdpa")
#: The train step as mha-ft trains by default: ours, unpadded, row-sparse embedding updates, FastDropout.
DEFAULTS = "ours + lazy embeddings + fast dropout"
#: The train step's matrix products and nothing else: the MFU no implementation of them passes here.
MATMULS_ALONE = "matrix products alone (bound)"
SECTIONS = ("attention", "train_step", "profile")
DEFAULT_SECTIONS = ("attention", "train_step")


@dataclass(frozen=True)
class BenchSettings:
    size: str = "mini"
    device: str = "cpu"
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    backends: tuple[str, ...] = ("reference", "sdpa", "flex")  # ours, in the attention section
    seq_lens: tuple[int, ...] = (64, 128, 256)
    pad_ratios: tuple[float, ...] = (0.0, 0.33, 0.66)
    attention_batch: int = 8
    train_batch: int = 32
    repeats: int = 5  # timed repeats per attention cell
    train_steps: int = 20  # timed steps per model in the train-step section
    warmup: int = 2  # untimed rounds first: allocator, kernel selection, lazy initialisation
    threads: int = field(default_factory=torch.get_num_threads)
    seed: int = 0
    lengths_from: str | None = None  # data file whose texts' token lengths the train step takes; None: lengths_fit
    lengths_fit: str = "sst2"  # the built-in length fit of the train step without a file: sst2 or conll
    text_column: str = TEXT_COLUMN
    profile_sizes: tuple[str, ...] = ("mini", "base")  # the profile section's models (hf_mha.bench_profile)
    profile_lengths: tuple[str, ...] = ("sst2", "conll")
    profile_steps: int = 10  # timed steps, then as many profiled, per case


def default_settings(quick: bool, device: str | None) -> BenchSettings:
    """Settings for this device: mini size and the CPU backends on CPU, bert-base and every backend on CUDA;
    `quick` shrinks everything to a tiny model and a few repeats (well under a minute on 2 loaded cores)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if quick:
        return BenchSettings(
            size="tiny", device=device, backends=runnable_backends(device), seq_lens=(64,), pad_ratios=(0.0, 0.66),
            attention_batch=4, train_batch=8, repeats=2, train_steps=3, warmup=1, profile_sizes=("tiny",),
            profile_steps=2,
        )
    return BenchSettings(size="mini" if device == "cpu" else "base", device=device, backends=runnable_backends(device))


def resolve_settings(quick: bool = False, device: str | None = None, **given) -> BenchSettings:
    """The device's defaults (see `default_settings`) with every option in `given` that is not None on top;
    lists become tuples. Checked: bad values raise UserError."""
    chosen = {name: tuple(value) if isinstance(value, list) else value
              for name, value in given.items() if value is not None}
    return check_settings(replace(default_settings(quick, device), **chosen))


def runnable_backends(device: str) -> tuple[str, ...]:
    return ("reference", "sdpa", "flex", "varlen", "nested") if device == "cuda" else ("reference", "sdpa", "flex")


def check_settings(settings: BenchSettings) -> BenchSettings:
    """Raise UserError, in one line that says how to fix it, for settings that cannot run here."""
    if settings.size not in SIZES:
        raise UserError(f"--size: unknown model size {settings.size!r}; choose one of {', '.join(SIZES)}")
    if settings.device not in ("cpu", "cuda"):
        raise UserError(f"--device: unknown device {settings.device!r}; choose cpu or cuda")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    unknown = [s for s in settings.sections if s not in SECTIONS]
    if unknown:
        raise UserError(f"--section: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    for backend in settings.backends:
        if backend not in BACKENDS:
            raise UserError(f"--backend: unknown attention backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if backend == "varlen" and settings.device != "cuda":
            raise UserError("--backend varlen needs a CUDA GPU (torch's flash varlen kernel); leave it out on CPU")
    max_positions = BertConfig().max_position_embeddings
    if any(not 2 <= n <= max_positions for n in settings.seq_lens):
        raise UserError(f"--seq-len: each length must be between 2 and {max_positions}, got {list(settings.seq_lens)}")
    if any(not 0 <= p < 1 for p in settings.pad_ratios):
        raise UserError(f"--pad: padding ratios must be in [0, 1), got {list(settings.pad_ratios)}")
    if settings.lengths_fit not in LENGTH_FITS or any(fit not in LENGTH_FITS for fit in settings.profile_lengths):
        raise UserError(f"--lengths: unknown length fit; choose from {', '.join(LENGTH_FITS)}")
    unknown = [s for s in settings.profile_sizes if s not in SIZES]
    if unknown:
        raise UserError(f"--size: unknown model size {unknown[0]!r}; choose one of {', '.join(SIZES)}")
    for name in ("attention_batch", "train_batch", "repeats", "train_steps", "threads", "profile_steps"):
        if getattr(settings, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(settings, name)}")
    if settings.warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {settings.warmup}")
    return settings


# ------------------------------------------------------------------------------------------------- models


def attention_variants(settings: BenchSettings) -> dict[str, nn.Module]:
    """Stock eager and sdpa, and ours with each backend padded and unpadded, on the same random weights.
    Dropout is off so every implementation does the same arithmetic and every backend can train."""
    torch.manual_seed(settings.seed)
    config = bert_config(settings.size, ATTENTION_VOCAB_SIZE, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base = BertModel(config, add_pooling_layer=False).to(settings.device)
    variants = {f"stock {impl}": stock_model(base, impl) for impl in STOCK_IMPLEMENTATIONS}
    for backend in settings.backends:
        for unpad in (False, True):
            variants[f"ours {backend} {'unpadded' if unpad else 'padded'}"] = our_model(base, backend, unpad)
    return variants


# ---------------------------------------------------------------------------------------------- sections


def attention_section(settings: BenchSettings, progress: Callable[[str], None]) -> list[Record]:
    variants = attention_variants(settings)
    config = next(iter(variants.values())).config
    params = matmul_params(next(iter(variants.values())))
    autocast = autocast_for(settings.device)
    peak = mfu_peak(settings)
    rng = random.Random(settings.seed)
    records = []
    for seq_len in settings.seq_lens:
        for pad_ratio in settings.pad_ratios:
            lengths = lengths_with_padding(settings.attention_batch, seq_len, pad_ratio, rng)
            batch = padded_batch(lengths, config.vocab_size, settings.device)
            backends = {name: backend_used(model, batch, autocast)
                        for name, model in variants.items() if name.startswith("ours")}
            modes = (("forward", forward_step, 1), ("forward+backward", forward_backward_step, 3))
            for mode, make_step, passes in modes:
                progress(f"attention: {mode}, seq_len {seq_len}, padding {pad_ratio:.0%}")
                steps = {name: make_step(model, batch, autocast) for name, model in variants.items()
                         if not _skipped(name, mode, settings.device)}
                timings = interleaved_timings(steps, settings.repeats, settings.warmup, settings.device)
                records += make_records(
                    "attention", mode, timings, [lengths] * settings.repeats,
                    lambda ls, p=passes: useful_flops(ls, params, config, p), peak, backends,
                )
    return records


def _skipped(name: str, mode: str, device: str) -> bool:
    # Our flex backend has no backward pass on CPU (FlexAttention's CPU path is inference only).
    return name.startswith("ours flex") and mode != "forward" and device == "cpu"




def train_step_section(
    settings: BenchSettings, all_lengths: list[int], progress: Callable[[str], None]
) -> list[Record]:
    """Stock sdpa against ours (auto, unpadded): forward + backward + AdamW, with the stock BERT dropout as in
    fine-tuning, on batches of `settings.train_batch` cut from `all_lengths` (a batch a round, warm-up included);
    and the same rounds' matrix products alone (`matmuls_alone_step`), the bound on the MFU column."""
    torch.manual_seed(settings.seed)
    config = bert_config(settings.size, VOCAB_SIZE, num_labels=2)
    base = BertForSequenceClassification(config).to(settings.device).train()
    models = {BASELINE: stock_model(base, "sdpa"), "ours auto unpadded": our_model(base, "auto", unpad=True),
              DEFAULTS: our_model(base, "auto", unpad=True)}
    if settings.device == "cuda" and is_flash_attn_2_available():
        models["stock flash_attention_2"] = stock_model(base, "flash_attention_2")
    del base
    word_embeddings(models[DEFAULTS]).sparse = True
    fast_dropout(models[DEFAULTS])
    round_lengths, batches = classification_batches(all_lengths, settings.train_batch, config.vocab_size,
                                                    settings.device)
    autocast = autocast_for(settings.device)
    backends = {"ours auto unpadded": backend_used(models["ours auto unpadded"], batches[0], autocast)}
    # Trainer's default optimizer (adamw_torch_fused), with the usual fine-tuning learning rate.
    steps = {name: train_step(model, (LazyEmbeddingAdamW if name == DEFAULTS else torch.optim.AdamW)(
        model.parameters(), lr=2e-5, fused=True), batches, autocast) for name, model in models.items()}
    steps[MATMULS_ALONE] = matmuls_alone_step(config, round_lengths, settings.device,
                                              torch.bfloat16 if uses_bf16(settings.device) else torch.float32)
    progress(f"train step: {settings.warmup} + {settings.train_steps} steps per model, batch {settings.train_batch}")
    timings = interleaved_timings(steps, settings.train_steps, settings.warmup, settings.device)
    params = matmul_params(models[BASELINE])
    return make_records(
        "train_step", "forward+backward+AdamW", timings, round_lengths[settings.warmup :],
        lambda ls: useful_flops(ls, params, config, 3), mfu_peak(settings), backends,
    )


def mfu_peak(settings: BenchSettings) -> float | None:
    """What MFU is measured against: a known GPU's dense bf16 spec peak, or on CPU the GEMM rate this process
    reaches in the dtype training multiplies in (bench_measure.measured_gemm_peak)."""
    if settings.device == "cuda":
        return dense_bf16_peak(settings.device)
    return measured_gemm_peak(settings.device, uses_bf16(settings.device))


# ------------------------------------------------------------------------------------------------ report


def machine_header(settings: BenchSettings) -> dict:
    """What a reader needs to judge and repeat the numbers: machine, versions, dtype, threads, load."""
    if settings.device == "cuda":
        machine = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    else:
        machine = f"{_cpu_model()}, {os.cpu_count()} logical CPUs"
    return {
        "machine": machine,
        "device": settings.device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "dtype": "bf16 autocast (fp32 weights)" if uses_bf16(settings.device) else "fp32",
        "threads": settings.threads,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "load_average_start": os.getloadavg()[0],
        "model": f"random-init BERT {settings.size}: " + ", ".join(f"{k}={v}" for k, v in SIZES[settings.size].items()),
        "peak_memory": "torch.cuda.max_memory_allocated" if settings.device == "cuda"
        else "n/a on CPU (no allocator statistics)",
        "mfu_peak_tflops": None if (peak := mfu_peak(settings)) is None else peak / 1e12,
        "mfu_peak": "dense bf16 spec peak" if settings.device == "cuda" else
        f"best {'bf16' if uses_bf16(settings.device) else 'fp32'} 2048^3 GEMM measured in this process",
        "settings": asdict(settings),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_bench(settings: BenchSettings, progress: Callable[[str], None] = lambda message: None) -> dict:
    """Run the sections `settings` asks for; returns {"header": ..., "records": [...]}, ready for JSON."""
    check_settings(settings)
    # The lengths come first, even when the train step does not run, so a bad data file fails before any timing.
    rounds = settings.warmup + settings.train_steps
    lengths, source = sample_lengths(
        settings.train_batch * rounds, random.Random(settings.seed), settings.lengths_from, settings.text_column,
        settings.lengths_fit,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        header = machine_header(settings)
        records = []
        if "attention" in settings.sections:
            header["attention"] = (
                f"BertModel, dropout off, batch {settings.attention_batch}, padded widths {list(settings.seq_lens)}, "
                f"padding ratios {list(settings.pad_ratios)}, {settings.warmup} warm-up + {settings.repeats} repeats"
            )
            records += attention_section(settings, progress)
        if "train_step" in settings.sections:
            records += train_step_section(settings, lengths, progress)
            header["train_step"] = (
                f"BertForSequenceClassification, dropout 0.1, AdamW, batch {settings.train_batch}, dynamic padding, "
                f"lengths from {source}, {settings.warmup} warm-up + {settings.train_steps} steps per model"
            )
        profile = []
        if "profile" in settings.sections:
            from hf_mha.bench_profile import run_profile

            profile = run_profile(settings.profile_sizes, settings.profile_lengths, settings.profile_steps,
                                  settings.warmup, settings.train_batch, settings.seed, settings.device, progress)
            header["profile"] = (
                f"Trainer.train on random-init BERT {', '.join(settings.profile_sizes)}, batch {settings.train_batch}, "
                f"{settings.warmup} warm-up + {settings.profile_steps} timed + {settings.profile_steps} profiled steps "
                "per case: plain = transformers.Trainer defaults (fp32, stock sdpa); mha-ft = our defaults"
            )
        header["load_average_end"] = os.getloadavg()[0]
    finally:
        torch.set_num_threads(threads)
    return {"header": header, "records": [asdict(r) for r in records], "profile": [asdict(r) for r in profile]}


def print_report(report: dict, console) -> None:
    """The header, then one table per section and mode."""
    from rich.table import Table

    header = report["header"]
    for key, value in header.items():
        if key != "settings":
            console.print(f"[bold]{key}[/]: {value}")
    show_memory = any(r["peak_memory_mib"] is not None for r in report["records"])
    show_mfu = any(r["mfu"] is not None for r in report["records"])
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in report["records"]:
        groups.setdefault((record["section"], record["mode"]), []).append(record)
    for (section, mode), records in groups.items():
        table = Table(title=f"{section}: {mode}", caption=f"ratio: median of per-repeat {BASELINE} time / time")
        columns = ["L", "pad", "implementation", "real tok/s", "step ms", f"vs {BASELINE}"]
        columns += ["peak MiB"] * show_memory + ["MFU"] * show_mfu
        for column in columns:
            table.add_column(column, justify="left" if column == "implementation" else "right", no_wrap=True)
        previous_cell = None
        for r in records:
            cell = (r["seq_len"], r["pad_ratio"])
            if previous_cell is not None and cell != previous_cell:
                table.add_section()
            previous_cell = cell
            # Name the kernel only where the name does not already: "ours auto unpadded -> sdpa".
            kernel = f" -> {r['backend']}" if r["backend"] and r["backend"] not in r["implementation"] else ""
            row = [f"{r['seq_len']:.0f}", f"{r['pad_ratio']:.0%}", r["implementation"] + kernel,
                   f"{r['real_tokens_per_s']:,.0f}", f"{r['step_ms']:.1f}", f"{r['vs_stock_sdpa']:.2f}x"]
            row += [_or_na(r["peak_memory_mib"], "{:,.0f}")] * show_memory + [_or_na(r["mfu"], "{:.1%}")] * show_mfu
            table.add_row(*row)
        console.print(table)
    if report.get("profile"):
        from hf_mha.bench_profile import ProfileRecord, print_profile

        print_profile([ProfileRecord(**r) for r in report["profile"]], console)


def _or_na(value: float | None, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)
