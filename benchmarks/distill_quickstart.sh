#!/usr/bin/env bash
# A 3-layer student of the 6-layer quickstart run, distilled and not: the done-when, end to end.
#   bash benchmarks/distill_quickstart.sh [TEACHER_RUN]   (default runs/quickstart; trained first when missing)
# Then: mha-ft compare runs/quickstart runs/qs-3l-distilled runs/qs-3l-distilled-a08-t4 runs/qs-3l --speed   (accuracy and CPU speed, one process)
set -euo pipefail
TEACHER=${1:-runs/quickstart}
[ -f "$TEACHER/metrics.json" ] || mha-ft train --recipe quickstart "output_dir=$TEACHER"
mha-ft distill --teacher "$TEACHER" --recipe quickstart --layers 3 output_dir=runs/qs-3l-distilled
mha-ft distill --teacher "$TEACHER" --recipe quickstart --layers 3 distill.alpha=0.8 distill.temperature=4 \
  output_dir=runs/qs-3l-distilled-a08-t4
mha-ft train --recipe quickstart "model.name=$TEACHER" model.num_layers=3 output_dir=runs/qs-3l
