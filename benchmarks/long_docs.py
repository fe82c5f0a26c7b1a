"""Long documents: texts of ~1,000 tokens built by joining same-label SST-2 sentences, trained and scored through
`mha-ft train` with `data.long_text` truncate, head_tail and windows at the same max_length. Each document mixes
in sentences of the other label (a seeded --noise share), so its label is what most of it says, not only its
start. Prints per run the dev accuracy over documents, how many documents were scored, and wall time, with
the machine and the commands; writes --out/results.json.

    python benchmarks/long_docs.py --sst2 ../shared/data/sst2 --out runs/long-docs --train-docs 300 --dev-docs 100

The built data sits in --out/data (train.jsonl, dev.jsonl: {"text", "label"} per document).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

TOKENS_PER_WORD = 1.3  # WordPiece pieces per whitespace word on SST-2, about


def documents(rows: list[dict], count: int, words: int, noise: float, rng: random.Random) -> list[dict]:
    by_label = {"0": [r["sentence"].strip() for r in rows if r["label"] == "0"],
                "1": [r["sentence"].strip() for r in rows if r["label"] == "1"]}
    docs = []
    for i in range(count):
        label = str(i % 2)
        other = "1" if label == "0" else "0"
        parts, length = [], 0
        while length < words:
            sentence = rng.choice(by_label[other if rng.random() < noise else label])
            parts.append(sentence)
            length += len(sentence.split())
        docs.append({"text": " . ".join(parts), "label": int(label)})
    rng.shuffle(docs)
    return docs


def run(name: str, files: dict[str, Path], out: Path, max_length: int, epochs: float, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "hf_mha_cli", "train", "--recipe", "imdb-long-docs",
               "model.name=sentence-transformers/all-MiniLM-L6-v2", f"data.files.train={files['train']}",
               f"data.files.validation={files['dev']}", f"data.max_length={max_length}",
               f"train.num_train_epochs={epochs}", "train.per_device_train_batch_size=32",
               f"output_dir={out / name}", "--overwrite", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out / name / "metrics.json").read_text())
    scored = len((out / name / "predictions.jsonl").read_text().splitlines())
    return {"run": name, "options": " ".join(extra), "dev_accuracy": metrics["eval_accuracy"],
            "documents_scored": scored, "wall_s": round(wall, 1), "command": " ".join(command[1:])}


def steps(folder: Path) -> int:
    """Optimizer steps a finished run took (from its trainer log, kept in metrics.json's rate and runtime)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    return round(metrics["train_runtime"] * metrics["train_steps_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2", type=Path, default=Path("../shared/data/sst2"))
    parser.add_argument("--out", type=Path, default=Path("runs/long-docs"))
    parser.add_argument("--train-docs", type=int, default=300)
    parser.add_argument("--dev-docs", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=1000, help="about this many tokens per document")
    parser.add_argument("--noise", type=float, default=0.35, help="share of sentences of the other label")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", default="truncate,head_tail,windows,truncate_matched",
                        help="truncate_matched: truncate for as many optimizer steps as windows took (its run "
                             "folder must exist), so that the comparison is at equal compute, not equal epochs")
    args = parser.parse_args()
    with open(args.sst2 / "train.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    half = len(rows) // 2  # dev documents from sentences no training document uses
    words = int(args.tokens / TOKENS_PER_WORD)
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = {"train": data / "train.jsonl", "dev": data / "dev.jsonl"}
    for split, source, count in (("train", rows[:half], args.train_docs), ("dev", rows[half:], args.dev_docs)):
        docs = documents(source, count, words, args.noise, rng)
        files[split].write_text("".join(json.dumps(d) + "\n" for d in docs))
    print(f"{args.train_docs} train / {args.dev_docs} dev documents of ~{args.tokens} tokens, {args.noise:.0%} "
          f"of each document's sentences from the other label; max_length {args.max_length}")
    variants = {"truncate": ["data.long_text=truncate"], "head_tail": ["data.long_text=head_tail"],
                "windows": ["data.long_text=windows", f"data.stride={args.max_length // 4}"]}
    results = []
    for name in args.runs.split(","):
        epochs = args.epochs
        if name == "truncate_matched":  # windows train on every window: the same number of steps for truncate
            epochs = args.epochs * steps(args.out / "windows") / max(1, -(-args.train_docs // 32))
            results.append(run(name, files, args.out, args.max_length, round(epochs, 2), variants["truncate"]))
        else:
            results.append(run(name, files, args.out, args.max_length, epochs, variants[name]))
    import torch
    import transformers

    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "torch": torch.__version__, "transformers": transformers.__version__}
    print(f"machine: {machine}")
    print(f"{'run':10} {'dev accuracy':>12} {'documents':>9} {'wall s':>7}")
    for r in results:
        print(f"{r['run']:10} {r['dev_accuracy']:12.4f} {r['documents_scored']:9d} {r['wall_s']:7.1f}")
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
