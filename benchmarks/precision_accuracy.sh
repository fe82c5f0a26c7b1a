#!/usr/bin/env bash
# Accuracy of the fast defaults against fp32 and dense AdamW, MiniLM (the embedded all-MiniLM-L6-v2), seed 42:
#   SST-2: sst2-full on the first 8,000 train sentences x 3 epochs, scored on dev (872);
#   CoNLL-2003: conll2003-full on the first 3,000 IOB2 train sentences x 3 epochs, lr 1e-4, scored on testb.
# Three runs each: the defaults (bf16 autocast where the CPU has it, lazy embeddings), fp32 (train.bf16=false),
# dense embedding updates (train.lazy_embeddings=false); then `mha-ft compare` of each task's three runs.
#   bash benchmarks/precision_accuracy.sh [DATA_DIR (default ../shared/data)] [OUT (default runs/precision)]
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/precision}
MODEL=sentence-transformers/all-MiniLM-L6-v2
SST2=(--recipe sst2-full "model.name=$MODEL" "data.files.train=$DATA/sst2/train.tsv"
      "data.files.validation=$DATA/sst2/dev.tsv" data.max_train_samples=8000)
CONLL=(--recipe conll2003-full "model.name=$MODEL" "data.files.train=$DATA/conll2003/iob2/eng.train.iob2"
       "data.files.validation=$DATA/conll2003/iob2/eng.testa.iob2" "data.files.test=$DATA/conll2003/iob2/eng.testb.iob2"
       data.max_train_samples=3000 train.learning_rate=1e-4)
declare -A VARIANT=([defaults]="" [fp32]="train.bf16=false" [dense]="train.lazy_embeddings=false")
for task in sst2 conll; do
  for name in defaults fp32 dense; do
    if [ "$task" = sst2 ]; then args=("${SST2[@]}"); else args=("${CONLL[@]}"); fi
    # shellcheck disable=SC2086  # a variant's override is one word, or none
    mha-ft train "${args[@]}" ${VARIANT[$name]} "output_dir=$OUT/$task-$name" --overwrite
  done
  mha-ft compare "$OUT/$task-defaults" "$OUT/$task-fp32" "$OUT/$task-dense"
done
