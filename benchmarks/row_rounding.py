"""Does rounding the packed row count up (hf_mha.attention.packing.packed_rows) pay on this CPU?

A MiniLM-shaped training step of our unpadded attention (random-init BERT, batch 32, dynamic padding, dropout 0.1,
fused AdamW, lazy embeddings off), once with the layers run on exactly the real tokens and once on the rounded
row count (forced in fp32 too, where the library does not round). Each variant runs in a process of its own,
the two taking turns for --rounds rounds, since oneDNN's kernel cache is per process: in one process the
variants would share built kernels. Each child runs with ONEDNN_VERBOSE=profile_create, and the parent counts
the kernels oneDNN built (cache misses) and their build time.
Prints the machine, the precision, the median step time of each variant, the kernels built, and the ratio.

    python benchmarks/row_rounding.py                        # bf16 autocast where the CPU has bf16 units, else fp32
    python benchmarks/row_rounding.py --dtype fp32 --steps 30
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

SST2_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"
BATCH = 32


def child(rows: str, dtype: str, steps: int, warmup: int, lengths_from: str | None) -> None:
    import contextlib

    import torch
    from transformers import BertForSequenceClassification

    import hf_mha.attention.swap as swap
    from hf_mha.attention.packing import packed_rows
    from hf_mha.bench_measure import (VOCAB_SIZE, bert_config, classification_batches, our_model, sample_lengths,
                                      train_step)

    # The encoder looks packed_rows up in its module at every call. Rounded rows are forced in fp32 too (where
    # the library leaves them off), so the benchmark also shows what they would cost there.
    if rows == "exact":
        swap.packed_rows = lambda num_tokens, device, matmul_dtype: num_tokens
    else:
        swap.packed_rows = lambda num_tokens, device, matmul_dtype: packed_rows(num_tokens, device, torch.bfloat16)
    rng = random.Random(0)
    lengths, _ = sample_lengths(BATCH * (warmup + steps), rng, lengths_from)
    torch.manual_seed(0)
    stock = BertForSequenceClassification(bert_config("mini", VOCAB_SIZE, num_labels=2)).train()
    model = our_model(stock, "auto", unpad=True)
    _, batches = classification_batches(lengths, BATCH, VOCAB_SIZE, "cpu")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext
    step = train_step(model, torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True), batches, autocast)
    seconds = []
    for round_ in range(warmup + steps):
        start = time.perf_counter()
        step(round_)
        seconds.append(time.perf_counter() - start)
    print(f"RESULT {statistics.median(seconds[warmup:])}", flush=True)


def run_child(rows: str, args: argparse.Namespace) -> tuple[float, int, float]:
    """(median step seconds, oneDNN kernels built, their build ms) of one child process."""
    command = [sys.executable, __file__, "--child", rows, "--dtype", args.dtype, "--steps", str(args.steps),
               "--warmup", str(args.warmup)] + (["--lengths-from", args.lengths_from] if args.lengths_from else [])
    env = dict(os.environ, ONEDNN_VERBOSE="profile_create")
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    builds = [line for line in out if line.startswith("onednn_verbose") and "create:cache_miss" in line]
    median = next(float(line.split()[1]) for line in out if line.startswith("RESULT "))
    return median, len(builds), sum(float(line.rsplit(",", 1)[1]) for line in builds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="processes per variant, taking turns")
    parser.add_argument("--lengths-from", default=str(SST2_TRAIN) if SST2_TRAIN.is_file() else None,
                        help="a table of texts whose token lengths make the batches (default: SST-2 train when "
                        "../shared/data has it, else a built-in fit of SST-2 lengths)")
    parser.add_argument("--child", choices=["exact", "rounded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dtype == "auto":
        from hf_mha.speedups import cpu_bf16_units

        args.dtype = "bf16" if cpu_bf16_units() else "fp32"
    if args.child:
        child(args.child, args.dtype, args.steps, args.warmup, args.lengths_from)
        return

    import torch

    from hf_mha.bench import _cpu_model

    print(f"machine: {_cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
          f"{'bf16 autocast' if args.dtype == 'bf16' else 'fp32'}; load average {os.getloadavg()[0]:.2f}")
    print(f"MiniLM shape, batch {BATCH}, lengths from {args.lengths_from or 'a built-in fit of SST-2'}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per process, {args.rounds} processes per variant")
    results: dict[str, list[tuple[float, int, float]]] = {"exact": [], "rounded": []}
    for round_ in range(args.rounds):
        for rows in ("exact", "rounded") if round_ % 2 == 0 else ("rounded", "exact"):
            results[rows].append(run_child(rows, args))
            median, built, build_ms = results[rows][-1]
            print(f"  round {round_ + 1} {rows:>7} rows: step {1000 * median:7.1f} ms median, "
                  f"oneDNN built {built} kernels in {build_ms:.0f} ms")
    medians = {rows: statistics.median(m for m, _, _ in runs) for rows, runs in results.items()}
    print(f"exact rows {1000 * medians['exact']:.1f} ms, rounded rows {1000 * medians['rounded']:.1f} ms: "
          f"rounding makes the step {medians['exact'] / medians['rounded']:.2f}x as fast")


if __name__ == "__main__":
    main()
