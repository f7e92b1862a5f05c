#!/usr/bin/env bash
# Images/s of `bitsweep eval` at several batches (issue 9: depthwise models must not be slower at
# the default batch than at a smaller one): the evaluation loop's images/s (without loading,
# compiling and calibrating) on N random images, median of REPEATS runs, THREADS threads (default
# 1: on a shared, loaded machine two OpenMP threads mostly measure the other jobs).
# Figures in docs/BENCHMARKS.md.
#
# Usage: bash bench/eval_batch_bench.sh MODELS_DIR SIZE [N REPEATS]
#   MODELS_DIR holds <model>-op13/model.onnx exported at SIZE px by
#   tests/real_models/export_torchvision.py --opsets 13 --size SIZE --batch 1.
# Env: BINARIES (default build/client/bitsweep; several to compare), MODELS (default
#   "mobilenet_v2 efficientnet_b0"), BATCHES (default "32 256"), MODES (default "fp32 fixed8":
#   fixed:8 weights, inputs and outputs calibrated on 32 images).
# Prints: model size binary batch mode images_per_second
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$1
SIZE=$2
N=${3:-2048}
REPEATS=${4:-3}
THREADS=${THREADS:-1}
BINARIES=${BINARIES:-build/client/bitsweep}
MODELS=${MODELS:-"mobilenet_v2 efficientnet_b0"}
BATCHES=${BATCHES:-"32 256"}
MODES=${MODES:-"fp32 fixed8"}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
/usr/bin/python3 - "$TMP" "$N" "$SIZE" <<'PY'
import sys, numpy as np
out, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(size)
np.save(f"{out}/x.npy", rng.standard_normal((n, 3, size, size)).astype(np.float32))
np.save(f"{out}/y.npy", (np.arange(n) % 1000).astype(np.int64))
np.save(f"{out}/cx.npy", rng.standard_normal((32, 3, size, size)).astype(np.float32))
np.save(f"{out}/cy.npy", (np.arange(32) % 1000).astype(np.int64))
PY
echo '{"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}}' \
  > "$TMP/fixed8.json"
ips() {  # the evaluation loop's images/s (compiling and calibrating excluded)
  "$@" 2>/dev/null | tail -1 | /usr/bin/python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["images_per_s"])'
}
for m in $MODELS; do
  for bin in $BINARIES; do
    for b in $BATCHES; do
      for mode in $MODES; do
        cmd=("$bin" eval --model "$DIR/$m-op13/model.onnx" --dataset "npy:$TMP/x.npy,$TMP/y.npy"
             --batch "$b" --threads "$THREADS" --limit "$N" --json)
        if [[ $mode == fixed8 ]]; then
          cmd+=(--config "$TMP/fixed8.json" --calibration_data "npy:$TMP/cx.npy,$TMP/cy.npy")
        fi
        samples=()
        for _ in $(seq 1 "$REPEATS"); do samples+=("$(ips "${cmd[@]}")"); done
        median=$(printf "%s\n" "${samples[@]}" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
        printf "%s %s %s b%s %s %.0f\n" "$m" "$SIZE" "$bin" "$b" "$mode" "$median"
      done
    done
  done
done
