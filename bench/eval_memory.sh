#!/usr/bin/env bash
# Peak resident memory of `bitsweep inspect` and `bitsweep eval` on large torchvision models
# (issue 9: loading may cost at most 2x the file size on top of the network's own buffers).
#
# Usage: bash bench/eval_memory.sh [MODELS_DIR]
#   MODELS_DIR holds <model>-op13/model.onnx (as tests/real_models/export_torchvision.py writes
#   them) at 224 px; without it, vgg11_bn and resnet50 are exported (random init, 224 px, batch 1)
#   into a temp dir.
# Env: BITSWEEP (default build/client/bitsweep), MODELS (default "vgg11_bn resnet50"), LIMIT (8).
# eval runs at the default batch (all LIMIT images in one batch) and, for eval_b1_MB, at batch 1:
# the difference is activations, which grow with the batch.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BITSWEEP:-build/client/bitsweep}
MODELS=${MODELS:-"vgg11_bn resnet50"}
LIMIT=${LIMIT:-8}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DIR=${1:-}
if [[ -z "$DIR" ]]; then
  DIR=$TMP/models
  /usr/bin/python3 tests/real_models/export_torchvision.py --out "$DIR" \
    --models "$(echo $MODELS | tr ' ' ',')" --opsets 13 --size 224 --batch 1 >/dev/null
fi
# A small 224 px dataset: LIMIT random images, labels 0..LIMIT-1.
/usr/bin/python3 - "$TMP" "$LIMIT" <<'PY'
import sys, numpy as np
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
np.save(f"{out}/x.npy", rng.standard_normal((n, 3, 224, 224)).astype(np.float32))
np.save(f"{out}/y.npy", (np.arange(n) % 1000).astype(np.int64))
PY
peak() {  # peak RSS in MB of the command given
  /usr/bin/time -v "$@" 2>&1 >/dev/null | awk '/Maximum resident/ {printf "%d", $6 / 1024}'
}
printf "%-12s %8s %11s %10s %9s %9s %11s\n" model file_MB inspect_MB insp/file eval_MB eval/file eval_b1_MB
for m in $MODELS; do
  f=$DIR/$m-op13/model.onnx
  size=$(( $(stat -c %s "$f") / 1048576 ))
  i=$(peak "$B" inspect --model "$f")
  e=$(peak "$B" eval --model "$f" --dataset "npy:$TMP/x.npy,$TMP/y.npy" --limit "$LIMIT" --json)
  e1=$(peak "$B" eval --model "$f" --dataset "npy:$TMP/x.npy,$TMP/y.npy" --limit "$LIMIT" --json \
       --batch 1)
  printf "%-12s %8d %11d %10.2f %9d %9.2f %11d\n" "$m" "$size" "$i" "$(echo "$i/$size" | bc -l)" \
    "$e" "$(echo "$e/$size" | bc -l)" "$e1"
done
