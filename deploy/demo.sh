#!/usr/bin/env bash
# The main job on the embedded default: installs dependencies if missing, builds, trains LeNet-5 on
# Fashion-MNIST's training split with our own engine (cached in build/zoo/; a few minutes the first
# time), then evaluates it in fp32 and under the quantization configs in deploy/demo/: accuracy,
# weight size, energy per inference and the format each layer used.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
BUILD_DIR="${BITSWEEP_BUILD_DIR:-build}"
B="$BUILD_DIR/client/bitsweep"
DATA="idx:/usr/share/datasets/fashion-mnist"
NORM=(--mean 0.2860 --std 0.3530)
MODEL="$BUILD_DIR/zoo/lenet5.onnx"
mkdir -p "$BUILD_DIR/zoo"
if [ ! -f "$MODEL" ]; then
  "$B" train --arch lenet5 --dataset "$DATA" "${NORM[@]}" --epochs 10 --lr 0.05 --lr-decay 0.8 \
       --out "$MODEL.tmp" && mv "$MODEL.tmp" "$MODEL"
fi
echo "== fp32"
"$B" eval --model "$MODEL" --dataset "$DATA" "${NORM[@]}"
for config in deploy/demo/*.json; do
  echo
  echo "== $config: $(cat "$config")"
  "$B" eval --model "$MODEL" --dataset "$DATA" "${NORM[@]}" --config "$config"
done
