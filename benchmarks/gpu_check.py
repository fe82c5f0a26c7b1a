"""The GPU check (run through benchmarks/gpu_check.sh): bf16 parity against stock, training-step speed of ours
against stock sdpa (and flash_attention_2 where installed) for bert-base and bert-large shapes at SST-2 and CoNLL
lengths, and a short end-to-end `mha-ft train` of a random-init bert-base on SST-2-length sentences, ours against
stock. Prints what it measured; `--dry-run` does all of it on CPU with tiny shapes (a test runs that).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from hf_mha.bench import SIZES, VOCAB_SIZE, print_report, resolve_settings, run_bench
from hf_mha.bench_measure import fitted_lengths, padded_batch
from hf_mha.models import use_attention

console = Console(width=140)
ROOT = Path(__file__).resolve().parents[1]


def parity(device: str, size: str, batch: int) -> bool:
    """Max |ours - stock sdpa| on real tokens, both under bf16 autocast, against the bf16 noise floor (stock
    bf16 against stock fp32), for each of our backends that runs here."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB_SIZE, **SIZES[size], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    stock = BertForSequenceClassification(config).to(device).eval()
    stock.set_attn_implementation("sdpa")
    lengths = fitted_lengths(batch, random.Random(0), "sst2")
    inputs = padded_batch(lengths, VOCAB_SIZE, device)
    keep = inputs["attention_mask"].bool()[..., None]

    def hidden(model, bf16: bool):
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            return model(**inputs, output_hidden_states=True).hidden_states[-1].float()

    reference = hidden(stock, bf16=True)
    floor = ((hidden(stock, bf16=False) - reference).abs() * keep).max().item()
    backends = ["sdpa", "nested"] + (["varlen"] if device == "cuda" else [])
    ok = True
    console.print(f"[bold]bf16 parity[/] ({size}, batch {batch}, SST-2 lengths): stock bf16 vs fp32 = {floor:.2e}")
    for backend in backends:
        ours = use_attention(copy.deepcopy(stock), "mha", backend=backend, unpad=True)
        diff = ((hidden(ours, bf16=True) - reference).abs() * keep).max().item()
        passed = diff <= 2 * floor + 1e-6
        ok &= passed
        console.print(f"  ours {backend:7} unpadded vs stock sdpa, both bf16: {diff:.2e} "
                      f"{'ok' if passed else 'FAIL'} (bound 2 x the bf16 floor)")
    return ok


def speed(device: str, sizes: list[str], steps: int) -> None:
    for size in sizes:
        for fit in ("sst2", "conll"):
            settings = resolve_settings(device=device, size=size, sections=["train_step"], lengths_fit=fit,
                                        train_steps=steps, warmup=2, train_batch=32)
            with console.status(f"train step: {size}, {fit} lengths"):
                report = run_bench(settings)
            print_report(report, console)


def end_to_end(device: str, size: str, steps: int, out: Path) -> None:
    """`mha-ft train` of a random-init BERT on synthetic SST-2-length sentences: ours (the default) vs stock."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    model_dir = out / "model"
    vocab = model_dir / "vocab.txt"
    model_dir.mkdir(parents=True)
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(model_dir)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(words) + 5, **SIZES[size], num_labels=2)).save_pretrained(model_dir)
    for split, count in (("train", 32 * steps), ("validation", 256)):
        lines = []
        for n in fitted_lengths(count, rng, "sst2"):
            sentence = rng.choices(words, k=max(1, n - 2))
            label = int(sentence[0][1:]) % 2  # learnable: the parity of the first word's number
            lines.append(json.dumps({"sentence": " ".join(sentence), "label": label}))
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    from hf_mha.recipe import load_recipe
    from hf_mha.training import train

    results = {}
    for attention in ("mha", "stock"):
        # The recipe file by path, in process: the device runs the tree as it is, without installing it.
        recipe = load_recipe(str(ROOT / "recipes" / "sst2-full.yaml"), [
            f"model.name={model_dir}", f"model.attention={attention}", f"data.files.train={out / 'train.jsonl'}",
            f"data.files.validation={out / 'validation.jsonl'}", "data.text_columns=[sentence]",
            "train.num_train_epochs=1", "train.save_strategy=no", "train.eval_strategy=no", "train.disable_tqdm=true",
            f"output_dir={out / attention}",
        ])
        start = time.perf_counter()
        metrics = train(recipe, overwrite=True, console=Console(quiet=True))
        results[attention] = (metrics["train_samples_per_second"], time.perf_counter() - start, metrics["eval_accuracy"])
    console.print(f"[bold]end to end[/]: mha-ft train, random-init {size} on {32 * steps} synthetic SST-2-length "
                  f"sentences, 1 epoch, batch 32, {device}")
    for attention, (per_second, wall, accuracy) in results.items():
        console.print(f"  model.attention={attention:5}: {per_second:8.1f} train samples/s, {wall:6.1f} s wall, "
                      f"eval accuracy {accuracy:.4f}")
    console.print(f"  ours / stock: {results['mha'][0] / results['stock'][0]:.2f}x samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, a few steps: checks the script")
    args = parser.parse_args()
    if args.dry_run:
        device, sizes, steps, e2e_size, e2e_steps = "cpu", ["tiny"], 2, "tiny", 4
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA GPU visible to torch; run with --dry-run for the CPU check of the script")
        device, sizes, steps, e2e_size, e2e_steps = "cuda", ["base", "large"], 20, "base", 150
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    console.print(f"[bold]gpu_check[/] on {name}, torch {torch.__version__}")
    ok = parity(device, sizes[0] if args.dry_run else "base", 32 if not args.dry_run else 8)
    speed(device, sizes, steps)
    with tempfile.TemporaryDirectory() as out:
        end_to_end(device, e2e_size, e2e_steps, Path(out))
    if not ok:
        sys.exit("gpu_check: bf16 parity failed (see above)")


if __name__ == "__main__":
    main()
