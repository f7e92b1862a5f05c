#!/usr/bin/env bash
# bitsweep against PyTorch on torchvision models (resnet18, mobilenet_v2, efficientnet_b0 at
# 64x64 and 224x224), fp32 and fixed:8 emulation, 2 threads, in one run: see
# bench/real_models_bench.py. Figures in docs/BENCHMARKS.md.
# Usage: bash bench/real_models_bench.sh [WORK_DIR] [extra real_models_bench.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BITSWEEP_BUILD_DIR:-build}"
W="${1:-/tmp/bitsweep-real-models-bench}"
shift || true
cmake --build "$BUILD" --target bitsweep -j 2 > /dev/null
/usr/bin/python3 bench/real_models_bench.py \
  --bitsweep "$BUILD/client/bitsweep" --work "$W" "$@"
