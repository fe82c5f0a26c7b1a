#!/usr/bin/env bash
# `mha-ft train --recipe sst2-full` at its defaults (MiniLM, the first 4,000 SST-2 train sentences, 1 epoch) against a
# plain transformers.Trainer run the way run_glue runs it (benchmarks/sst2_plain_trainer.py: fp32, stock attention,
# dynamic padding, random batches, same lr 5e-5, batch 32, same seed), both at the same time, each pinned to one core
# with one thread, so load from anything else hits both alike. Prints each one's train samples/s and dev accuracy.
# mha-ft's train_runtime also holds its end-of-epoch evaluation and checkpoint (the plain run does neither).
#   bash benchmarks/sst2_side_by_side.sh [DATA_DIR (default ../shared/data)] [OUT (default runs/side-by-side)] [SEED (42)] \
#     [KEY=VALUE ... (recipe overrides for the mha-ft run, e.g. train.train_sampling_strategy=random)]
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/side-by-side}
SEED=${3:-42}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
taskset -c 0 mha-ft train --recipe sst2-full model.name=sentence-transformers/all-MiniLM-L6-v2 \
  "data.files.train=$DATA/sst2/train.tsv" "data.files.validation=$DATA/sst2/dev.tsv" \
  data.max_train_samples=4000 train.num_train_epochs=1 "train.seed=$SEED" "output_dir=$OUT/mha-ft" "$@" --overwrite > "$OUT/mha-ft.log" 2>&1 &
ours=$!
taskset -c 1 python benchmarks/sst2_plain_trainer.py --train "$DATA/sst2/train.tsv" --dev "$DATA/sst2/dev.tsv" \
  --samples 4000 --epochs 1 --lr 5e-5 --batch 32 --seed "$SEED" --json > "$OUT/plain.json" 2> "$OUT/plain.log" &
plain=$!
wait $ours $plain
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ours = json.load(open(f"{out}/mha-ft/metrics.json"))
plain = json.loads(open(f"{out}/plain.json").read().strip().splitlines()[-1])
print(f"{'':22}{'samples/s':>10}{'dev acc':>9}")
print(f"{'plain Trainer':22}{plain['train_samples_per_second']:>10.1f}{plain['dev_accuracy']:>9.4f}")
print(f"{'mha-ft sst2-full':22}{ours['train_samples_per_second']:>10.1f}{ours['eval_accuracy']:>9.4f}")
print(f"speed-up {ours['train_samples_per_second'] / plain['train_samples_per_second']:.2f}x, "
      f"accuracy {100 * (ours['eval_accuracy'] - plain['dev_accuracy']):+.2f} pt (one core each, same time)")
PY
