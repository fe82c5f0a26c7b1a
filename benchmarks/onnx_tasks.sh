#!/usr/bin/env bash
# ONNX export of one run per task with MiniLM, each checked in onnxruntime against torch (max |logit diff| on the
# run's validation examples) and quantized to int8 (metric change, speed-up). Short runs: the export is measured,
# not the training. Needs runs/quickstart (mha-ft train --recipe quickstart output_dir=runs/quickstart).
#   bash benchmarks/onnx_tasks.sh [DATA_DIR]     (default ../shared/data)
set -euo pipefail
DATA=${1:-../shared/data}
M=model.name=sentence-transformers/all-MiniLM-L6-v2
[ -f runs/onnx-ner/metrics.json ] || mha-ft train --recipe conll2003-full $M "data.files.train=$DATA/conll2003/eng.train" \
  "data.files.validation=$DATA/conll2003/eng.testa" data.files.test=null data.max_train_samples=2000 \
  data.max_eval_samples=500 train.num_train_epochs=1 train.learning_rate=1e-4 output_dir=runs/onnx-ner
[ -f runs/onnx-qa/metrics.json ] || mha-ft train --recipe squad-full $M "data.files.train=$DATA/squad_v1.1/dev-part-a.json" \
  data.validation_group=title data.validation_fraction=0.2 data.max_train_samples=1500 data.max_eval_samples=300 \
  train.num_train_epochs=1 train.learning_rate=1e-4 output_dir=runs/onnx-qa
for run in quickstart onnx-ner onnx-qa; do
  rm -rf "runs/$run-onnx"
  mha-ft export --run "runs/$run" --out "runs/$run-onnx" --format onnx --quantize int8
done
