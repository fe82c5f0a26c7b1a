"""Training speed of each tuning method, measured side by side in one process.

The wall times of separate runs on a shared machine say as much about the neighbours as about the method. Here
every method trains on the same SST-2 batches (32 real sentences, dynamic padding), one step each in turn, so
a busy moment hits them all alike; the result is samples/s (median of the rounds) and the ratio to full
fine-tuning.

    python benchmarks/peft_sst2_speed.py runs/bench-peft-sst2      # the run folders of benchmarks/peft_sst2.sh
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder holding one finished run per method")
    parser.add_argument("--steps", type=int, default=8, help="training steps per method and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import transformers
    from transformers import DataCollatorWithPadding

    from hf_mha.data import load_raw
    from hf_mha.recipe import load_recipe
    from hf_mha.tasks import get_task
    from hf_mha.models import load_model, load_tokenizer
    from hf_mha.tuning import resolve

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    runs = sorted(p for p in args.runs.iterdir() if (p / "metrics.json").is_file())
    recipes = {run.name: load_recipe(str(run / "recipe.yaml")) for run in runs}
    first = next(iter(recipes.values()))
    task = get_task(first.task)
    raw = load_raw(first)
    labels = task.labels(raw, first)
    tokenizer = load_tokenizer(first)
    features = task.preprocess(raw["train"], tokenizer, first, labels, training=True)
    collate = DataCollatorWithPadding(tokenizer)
    columns = ["input_ids", "attention_mask", "labels"]
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(features), generator=generator).tolist()
    batches = [collate([{k: features[i][k] for k in columns} for i in order[b * 32:(b + 1) * 32]])
               for b in range(args.steps)]

    models = {}
    for name, recipe in recipes.items():
        torch.manual_seed(0)
        model = load_model(recipe, task.model_class, attention=recipe.model.attention, **labels.config_kwargs())
        model = resolve(recipe).apply(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        models[name] = (model.train(), optimizer)

    # Step by step, every method in turn: a neighbour's burst of work lands on all methods, not on one.
    seconds = {name: [0.0] * args.rounds for name in models}
    for round_ in range(args.rounds):
        for batch in batches:
            for name, (model, optimizer) in models.items():
                start = time.perf_counter()
                model(**batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                seconds[name][round_] += time.perf_counter() - start

    samples = 32 * args.steps
    baseline = samples / statistics.median(seconds["full"]) if "full" in seconds else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch 32, {args.steps} steps x "
          f"{args.rounds} rounds, methods interleaved step by step, median")
    print("| method | train samples/s | vs full |")
    print("|---|---:|---:|")
    for name, times in seconds.items():
        speed = samples / statistics.median(times)
        print(f"| {name} | {speed:.1f} | {f'{speed / baseline:.2f}x' if baseline else '-'} |")


if __name__ == "__main__":
    main()
