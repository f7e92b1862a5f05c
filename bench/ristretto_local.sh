#!/usr/bin/env bash
# The ristretto flow end to end on LeNet-5 through `bitsweep local` (coordinator, gRPC on
# loopback, SQLite, workers in one process): wall time and trials per minute with 1 worker x 2
# threads and with 2 workers x 1 thread (the same two cores).
#
#   bash bench/ristretto_local.sh [MODEL] [FINETUNE_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
B="${BITSWEEP_BUILD_DIR:-build}/client/bitsweep"
MODEL="${1:-models/lenet5.onnx}"
STEPS="${2:-1000}"
DATA="idx:/usr/share/datasets/fashion-mnist"
for workers in 1 2; do
  dir="$(mktemp -d)"
  start=$(date +%s.%N)
  "$B" local --model "$MODEL" --dataset "$DATA" --mean 0.2860 --std 0.3530 \
      --strategy ristretto --error-margin 1.0 --finetune-steps "$STEPS" \
      --workers "$workers" --threads 2 --db "$dir/results.db" 2>/dev/null | tee "$dir/out.txt"
  end=$(date +%s.%N)
  trials=$(sed -n 's/^sweep [0-9]* [a-z]*: \([0-9]*\) trials.*/\1/p' "$dir/out.txt")
  awk -v w="$workers" -v s="$start" -v e="$end" -v t="$trials" 'BEGIN {
    printf "== %d worker(s): %d trials in %.1f s wall, %.1f trials/min\n", w, t, e - s, t / (e - s) * 60 }'
  rm -rf "$dir"
done
