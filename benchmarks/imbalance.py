"""Imbalanced classes: SST-2 made 1:10 (a seeded 10 % of the negatives kept), trained through `mha-ft train`
with and without `train.class_weights=balanced` (and, with --focal, `train.loss=focal`), scored on the balanced
SST-2 dev set. Prints the minority class's (negative, 0) precision / recall / F1 and macro F1 of each run, with
the machine and the commands, and writes them to --out/results.json.

    python benchmarks/imbalance.py --sst2 ../shared/data/sst2 --out runs/imbalance --samples 8000 --epochs 1

The built data sits in --out/data (train.tsv: the imbalanced sample; dev.tsv: SST-2 dev as is).
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

from sklearn.metrics import f1_score, precision_recall_fscore_support


def build(sst2: Path, out: Path, samples: int, seed: int) -> tuple[Path, Path, dict]:
    """train.tsv: all positives and a seeded 10 % of the negatives, shuffled, first `samples` rows."""
    with open(sst2 / "train.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rng = random.Random(seed)
    kept = [r for r in rows if r["label"] == "1" or rng.random() < 0.10]
    rng.shuffle(kept)
    kept = kept[:samples]
    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.tsv"
    with open(train, "w", encoding="utf-8", newline="") as f:
        f.write("sentence\tlabel\n" + "".join(f"{r['sentence']}\t{r['label']}\n" for r in kept))
    counts = {"0": sum(r["label"] == "0" for r in kept), "1": sum(r["label"] == "1" for r in kept)}
    return train, sst2 / "dev.tsv", counts


def run(name: str, train: Path, dev: Path, out: Path, epochs: float, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "hf_mha_cli", "train", "--recipe", "sst2-full",
               "model.name=sentence-transformers/all-MiniLM-L6-v2", f"data.files.train={train}",
               f"data.files.validation={dev}", "data.max_length=64", f"train.num_train_epochs={epochs}",
               "eval.metrics=[f1_macro, accuracy]", f"output_dir={out / name}", "--overwrite", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    gold, predicted = [], []
    for line in (out / name / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold.append(row["label"])
        predicted.append(row["predicted"])
    p, r, f, _ = precision_recall_fscore_support(gold, predicted, labels=[0], zero_division=0)
    return {"run": name, "options": " ".join(extra) or "(none)", "minority_precision": float(p[0]),
            "minority_recall": float(r[0]), "minority_f1": float(f[0]),
            "macro_f1": float(f1_score(gold, predicted, average="macro")), "wall_s": round(wall, 1),
            "command": " ".join(command[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2", type=Path, default=Path("../shared/data/sst2"))
    parser.add_argument("--out", type=Path, default=Path("runs/imbalance"))
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--focal", action="store_true", help="also run train.loss=focal (with and without weights)")
    args = parser.parse_args()
    train, dev, counts = build(args.sst2, args.out / "data", args.samples, args.seed)
    print(f"train: {sum(counts.values()):,} examples, negative {counts['0']:,} : positive {counts['1']:,}; "
          f"dev: {dev} (balanced)")
    variants = [("plain", []), ("balanced", ["train.class_weights=balanced"])]
    if args.focal:
        variants += [("focal", ["train.loss=focal"]), ("balanced-focal", ["train.class_weights=balanced", "train.loss=focal"])]
    results = [run(name, train, dev, args.out, args.epochs, extra) for name, extra in variants]
    import torch
    import transformers

    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "torch": torch.__version__, "transformers": transformers.__version__, "counts": counts}
    print(f"machine: {machine}")
    print(f"{'run':16} {'minority P':>10} {'minority R':>10} {'minority F1':>11} {'macro F1':>9} {'wall s':>7}")
    for r in results:
        print(f"{r['run']:16} {r['minority_precision']:10.4f} {r['minority_recall']:10.4f} {r['minority_f1']:11.4f} "
              f"{r['macro_f1']:9.4f} {r['wall_s']:7.1f}")
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
