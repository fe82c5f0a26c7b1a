#!/usr/bin/env bash
# A 6-trial search over full fine-tuning and LoRA on SST-2 (8k sentences, 1 epoch each, MiniLM), against the
# built-in sst2-full recipe trained on the same data for the same epoch. Writes runs/search-sst2/ and
# runs/search-sst2-baseline/; prints the search table and the baseline's dev accuracy.
#   bash benchmarks/search_sst2.sh [SST2_DIR]       (default ../shared/data/sst2)
set -euo pipefail
SST2=${1:-../shared/data/sst2}
COMMON=(model.name=sentence-transformers/all-MiniLM-L6-v2 "data.files.train=$SST2/train.tsv"
        "data.files.validation=$SST2/dev.tsv" data.max_train_samples=8000 data.max_length=64
        train.num_train_epochs=1 train.eval_strategy=steps train.eval_steps=50 train.save_strategy=steps
        train.save_steps=50)
mha-ft search --recipe sst2-full --trials 6 "${COMMON[@]}" \
  'search.tuning.method={choice: [full, lora]}' 'search.train.learning_rate={log_uniform: [2.0e-5, 6.0e-4]}' \
  'search.tuning.r={choice: [8, 16]}' output_dir=runs/search-sst2
mha-ft train --recipe sst2-full "${COMMON[@]}" output_dir=runs/search-sst2-baseline
