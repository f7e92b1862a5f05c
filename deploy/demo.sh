#!/usr/bin/env bash
# The main job on the embedded default: installs dependencies if missing, builds, fits the default
# model on Fashion-MNIST's training split (cached in build/zoo/) and evaluates it on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
BUILD_DIR="${BITSWEEP_BUILD_DIR:-build}"
DATA=/usr/share/datasets/fashion-mnist
MODEL="$BUILD_DIR/zoo/linear.onnx"
mkdir -p "$BUILD_DIR/zoo"
if [ ! -f "$MODEL" ]; then
  "$BUILD_DIR/client/bitsweep" train --arch linear --dataset "idx:$DATA/train" --out "$MODEL"
fi
"$BUILD_DIR/client/bitsweep" eval --model "$MODEL" --dataset "idx:$DATA/t10k" --batch 256 --threads 2
