#!/usr/bin/env bash
# The main job on the embedded default: installs dependencies if missing, builds, then evaluates
# our LeNet-5 (models/lenet5.onnx, trained with `bitsweep train`, see models/README.md) on
# Fashion-MNIST in fp32 and under each quantization config in deploy/demo/: accuracy, weight size,
# BOPs, energy per inference and the format each layer ended up with.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
B="${BITSWEEP_BUILD_DIR:-build}/client/bitsweep"
DATA="idx:/usr/share/datasets/fashion-mnist"
NORM=(--mean 0.2860 --std 0.3530)
MODEL=models/lenet5.onnx
echo "== fp32"
"$B" eval --model "$MODEL" --dataset "$DATA" "${NORM[@]}"
for config in deploy/demo/*.json; do
  echo
  echo "== $config: $(cat "$config")"
  "$B" eval --model "$MODEL" --dataset "$DATA" "${NORM[@]}" --config "$config"
done
