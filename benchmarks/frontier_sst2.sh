#!/usr/bin/env bash
# The SST-2 accuracy/speed frontier: from the 6-layer MiniLM run of benchmarks/search_sst2.sh (runs/search-sst2-baseline:
# sst2-full on 8k sentences, 1 epoch), a 3-layer student and a 50 %-heads pruned model, each with and without
# distillation (1 epoch each, the run's recipe), then every run's dev accuracy against CPU predict speed, side by side.
#   bash benchmarks/frontier_sst2.sh [BASE_RUN]
set -euo pipefail
BASE=${1:-runs/search-sst2-baseline}
mha-ft compress --run "$BASE" --layers 3 --out runs/sst2-frontier/layers
mha-ft compress --run "$BASE" --layers 3 --distill --out runs/sst2-frontier/layers-distilled
mha-ft compress --run "$BASE" --heads 0.5 --out runs/sst2-frontier/heads
mha-ft compress --run "$BASE" --heads 0.5 --distill --out runs/sst2-frontier/heads-distilled
mha-ft compare "$BASE" runs/sst2-frontier/layers/layers-3 runs/sst2-frontier/layers-distilled/layers-3 \
  runs/sst2-frontier/heads/heads-0.5-trained runs/sst2-frontier/heads-distilled/heads-0.5-trained \
  --speed --plot runs/sst2-frontier/frontier.png
