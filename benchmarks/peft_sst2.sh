#!/usr/bin/env bash
# Tuning methods compared on SST-2: trainable share, dev accuracy, wall time and training throughput.
#
# The embedded all-MiniLM-L6-v2 on 8,000 SST-2 training sentences, 3 epochs, batch 32, seed 42, the best of the
# three per-epoch dev scores (recipes/sst2-full.yaml with overrides; only the method, its options and the
# learning rate change). Adapter methods need a higher learning rate than full fine-tuning: LoRA scored 0.846 at
# 1e-3 and 0.858 at 2e-3 (full: 0.864). On a machine shared with other jobs, OMP_NUM_THREADS=1 trains several
# times faster than two threads fighting for two busy cores.
#
#   bash benchmarks/peft_sst2.sh                 # all methods, one after the other (5-15 min each on 2 cores)
#   bash benchmarks/peft_sst2.sh lora ia3        # some of them
#   DATA=/path/to/sst2 OUT=runs/bench bash benchmarks/peft_sst2.sh
#
# Each run lands in $OUT/<method>; a finished one is kept and not run again. The table is printed at the end,
# then the methods' training speed measured side by side (benchmarks/peft_sst2_speed.py): on a shared machine
# the wall times of separate runs also measure the neighbours.
set -euo pipefail

DATA=${DATA:-../shared/data/sst2}
OUT=${OUT:-runs/bench-peft-sst2}
COMMON=(model.name=sentence-transformers/all-MiniLM-L6-v2 "data.files.train=$DATA/train.tsv"
        "data.files.validation=$DATA/dev.tsv" data.max_train_samples=8000)

declare -A OPTIONS=(
  [full]="tuning.method=full train.learning_rate=5e-5"
  [lora]="tuning.method=lora tuning.r=8 tuning.lora_alpha=16 tuning.lora_dropout=0.1 train.learning_rate=2e-3"
  [dora]="tuning.method=dora tuning.r=8 tuning.lora_alpha=16 tuning.lora_dropout=0.1 train.learning_rate=1e-3"
  [adalora]="tuning.method=adalora tuning.init_r=12 tuning.target_r=8 tuning.lora_alpha=16 tuning.lora_dropout=0.1
             tuning.tinit=75 tuning.tfinal=150 tuning.deltaT=10 train.learning_rate=1e-3"
  [ia3]="tuning.method=ia3 train.learning_rate=5e-3"
  [prefix]="tuning.method=prefix tuning.num_virtual_tokens=20 train.learning_rate=5e-3"
  [adapter]="tuning.method=adapter tuning.placement=houlsby tuning.reduction_factor=16 train.learning_rate=1e-3"
)
ORDER=(full lora dora adalora ia3 prefix adapter)
METHODS=("${@:-${ORDER[@]}}")

for method in "${METHODS[@]}"; do
  [[ -n "${OPTIONS[$method]:-}" ]] || { echo "unknown method $method; choose from ${ORDER[*]}" >&2; exit 2; }
  if [[ -f "$OUT/$method/metrics.json" ]]; then
    echo "== $method: already done ($OUT/$method)"
    continue
  fi
  echo "== $method: ${OPTIONS[$method]}"
  # shellcheck disable=SC2086  # the options are words on purpose
  mha-ft train --recipe recipes/sst2-full.yaml "${COMMON[@]}" ${OPTIONS[$method]} "output_dir=$OUT/$method"
done

python - "$OUT" "${ORDER[@]}" <<'PY'
import json, os, platform, sys
from pathlib import Path

import torch
import yaml

out, methods = Path(sys.argv[1]), sys.argv[2:]
print(f"\nSST-2 dev, all-MiniLM-L6-v2, 8,000 train sentences x 3 epochs, batch 32, seed 42 · "
      f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, fp32\n")
print("| method | options | trainable params | trainable % | dev accuracy | wall time (s) | train samples/s |")
print("|---|---|---:|---:|---:|---:|---:|")
for method in methods:
    metrics_file = out / method / "metrics.json"
    if not metrics_file.is_file():
        continue
    m = json.loads(metrics_file.read_text())
    r = yaml.safe_load((out / method / "recipe.yaml").read_text())
    options = ", ".join(f"{k}={v}" for k, v in r["tuning"].items() if k != "method")
    options = (options + ", " if options else "") + f"lr={r['train']['learning_rate']}"
    print(f"| {r['tuning']['method']} | {options} | {m['trainable_params']:,} | {m['trainable_percent']:.2f} | "
          f"{m['eval_accuracy']:.4f} | {m['train_runtime']:.0f} | {m['train_samples_per_second']:.1f} |")
PY

python benchmarks/peft_sst2_speed.py "$OUT"
