#!/usr/bin/env bash
# Peak RSS of a quantized eval against the fp32 eval of the same model and batch (issue target:
# at most 1.5x: a trial adds one quantized copy of the weights, nothing per batch).
#
#   bash bench/eval_memory.sh MODEL.onnx [CONFIG.json] [BATCH]
# Prints one line per run and the ratio. Needs /usr/bin/time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$1"
CONFIG="${2:-}"
BATCH="${3:-256}"
B="${BITSWEEP_BUILD_DIR:-build}/client/bitsweep"
DATA=/usr/share/datasets/fashion-mnist
if [ -z "$CONFIG" ]; then
  CONFIG=$(mktemp --suffix=.json)
  echo '{"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}}' > "$CONFIG"
fi
rss() {  # peak resident set size in KiB of the given command
  /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1
}
fp32=$(rss "$B" eval --model "$MODEL" --dataset "idx:$DATA/t10k" --batch "$BATCH" --threads 2)
quant=$(rss "$B" eval --model "$MODEL" --dataset "idx:$DATA/t10k" --batch "$BATCH" --threads 2 \
        --config "$CONFIG")
echo "fp32 eval peak RSS:      ${fp32} KiB"
echo "quantized eval peak RSS: ${quant} KiB ($(cat "$CONFIG"))"
awk -v a="$quant" -v b="$fp32" 'BEGIN { printf "ratio quantized / fp32:  %.3f\n", a / b }'
