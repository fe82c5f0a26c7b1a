#!/usr/bin/env bash
# One GPU check for a lent H100/H200 (under 8 minutes): bf16 parity of ours against stock, train-step speed of ours
# against stock sdpa (and flash_attention_2 where installed) for bert-base and bert-large shapes at SST-2 and CoNLL
# lengths (real tokens/s, step ms, peak memory, MFU against the dense bf16 peak), and a short end-to-end
# `mha-ft train` of a random-init bert-base, ours against stock. `--dry-run`: the same on CPU with tiny shapes.
#   bash benchmarks/gpu_check.sh [--dry-run]
# The device image lacks datasets, evaluate and seqeval: install their wheels first (see .library/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# The tree itself, installed or not (the device machine runs a copy of the working tree).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python benchmarks/gpu_check.py "$@"
