#!/usr/bin/env bash
# Search quality of the planner strategies on a zoo model (docs/RESULTS.md, "Search quality"):
# the exhaustive per-class grid (conv weights x fc weights x activations, each fixed:2..8 and
# fixed:16) against ristretto, sensitivity, evolutionary, hawq (Hessian sensitivities) and
# hawq-table (measured single-layer drops) with their default settings (plus, for reference,
# ristretto with the paper's widths 16/8/4/2, hawq without fine-tuning, hawq with a size budget
# and hawq with fixed-point weight candidates), all through `bitsweep local` on Fashion-MNIST's
# 10,000 test images, error margin 1.0 point. All sweeps of a model share one
# results database, so a config two strategies both try is evaluated once (the trial still counts
# for both). Prints a Markdown table per model (bench/search_quality.py): trials, lowest energy and
# smallest weights within the margin, hypervolume (top-1 up, weight size down; reference 10 %
# top-1 and the fp32 size) over the grid's, and hawq's predicted against measured top-1.
#
#   bash bench/search_quality.sh [MODEL_NAME ...]      # default: lenet5
#   BITSWEEP_BENCH_DIR=DIR keeps the databases there (default: a temporary directory, removed).
#   BITSWEEP_BENCH_RUNS="grid hawq ..." runs only those sweeps (default: all of them); with
#   BITSWEEP_BENCH_DIR, sweeps run earlier into the same database are reported too.
set -euo pipefail
cd "$(dirname "$0")/.."
B="${BITSWEEP_BUILD_DIR:-build}/client/bitsweep"
DATA="idx:/usr/share/datasets/fashion-mnist"
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(lenet5)
WIDTHS="fixed:16,fixed:8,fixed:7,fixed:6,fixed:5,fixed:4,fixed:3,fixed:2"
if [ -n "${BITSWEEP_BENCH_DIR:-}" ]; then
  WORK="$BITSWEEP_BENCH_DIR"
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi

for name in "${MODELS[@]}"; do
  model="models/$name.onnx"
  db="$WORK/$name.db"
  run() {  # run STRATEGY_NAME FLAGS...: one sweep, its wall time appended to $WORK/$name.wall
    local label="$1"
    shift
    if [ -n "${BITSWEEP_BENCH_RUNS:-}" ] && [[ " $BITSWEEP_BENCH_RUNS " != *" $label "* ]]; then
      return 0
    fi
    local start end
    start=$(date +%s.%N)
    "$B" local --model "$model" --dataset "$DATA" --mean 0.2860 --std 0.3530 --error-margin 1.0 \
        --workers 2 --threads 2 --db "$db" --name "$label" "$@" >"$WORK/$name.$label.out" 2>&1 ||
      { cat "$WORK/$name.$label.out" >&2; exit 1; }
    end=$(date +%s.%N)
    awk -v l="$label" -v s="$start" -v e="$end" 'BEGIN { printf "%s %.1f\n", l, e - s }' \
      >>"$WORK/$name.wall"
  }
  [ -n "${BITSWEEP_BENCH_RUNS:-}" ] || : >"$WORK/$name.wall"
  grid="conv.weights=$WIDTHS;default.activations=$WIDTHS"
  if "$B" inspect --model "$model" --json | grep -q '"class":"fc"'; then
    grid="conv.weights=$WIDTHS;fc.weights=$WIDTHS;default.activations=$WIDTHS"
  fi
  run grid --strategy grid --grid "$grid"
  run ristretto --strategy ristretto
  run ristretto-16-8-4-2 --strategy ristretto --weight-formats fixed:16,fixed:8,fixed:4,fixed:2 \
      --activation-formats fixed:16,fixed:8,fixed:4,fixed:2
  run sensitivity --strategy sensitivity
  run evolutionary --strategy evolutionary
  run hawq --strategy hawq
  run hawq-table --strategy hawq-table
  # Not default settings, for reference: hawq without fine-tuning (its default before it
  # fine-tuned: 11 knapsack configs instead of 7 and 4 fine-tuned), hawq's budget on size instead
  # of energy, and hawq with the other strategies' fixed-point weight candidates (its default
  # before per-channel integers).
  run hawq-no-finetune --strategy hawq --finetune-steps 0
  run hawq-size --strategy hawq --objectives top1,size
  run hawq-fixed --strategy hawq --weight-formats "$WIDTHS"
  echo "### $name"
  echo
  python3 bench/search_quality.py "$db" "$WORK/$name.wall"
  echo
done
