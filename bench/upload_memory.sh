#!/usr/bin/env bash
# Peak memory of the coordinator (VmHWM) and of the client while models are uploaded: a valid
# 200 MB and a valid 1 GiB ONNX model (one Gemm, zero weights), 1 GiB of random bytes (refused),
# and the 200 MB model against --max-model-bytes 100000000 (refused at the chunk that passes it).
#
#   bash bench/upload_memory.sh [BUILD_DIR] [WORK_DIR]      (defaults: build, a temp dir)
#
# Prints one line per case: the coordinator's peak RSS, the client's, the wall time and the
# answer. Needs ~3.5 GB of free disk in WORK_DIR and Debian's python3-onnx and python3-numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
WORK="${2:-$(mktemp -d)}"
mkdir -p "$WORK"
COORDINATOR="$BUILD/server/service/bitsweep-coordinator"
CLIENT="$BUILD/client/bitsweep"

make_model() {  # make_model FILE COLUMNS: x[1,16384] @ W[16384, COLUMNS]
  [ -f "$1" ] && return
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, numpy as np, onnx
from onnx import helper, TensorProto
path, cols = sys.argv[1], int(sys.argv[2])
w = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[16384, cols])
w.raw_data = np.zeros((16384, cols), np.float32).tobytes()
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16384])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
                          [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
with open(path, "wb") as f:
    f.write(model.SerializeToString())
PY
}
make_model "$WORK/m200.onnx" 3200     # 16384 x 3200 x 4 B = 210 MB
make_model "$WORK/m1g.onnx" 16384     # 16384 x 16384 x 4 B = 1.07 GB
[ -f "$WORK/junk1g.onnx" ] || head -c 1073741824 /dev/urandom > "$WORK/junk1g.onnx"

run_case() {  # run_case LABEL FILE [coordinator flags...]
  local label="$1" file="$2"; shift 2
  local db="$WORK/case-$RANDOM"
  mkdir -p "$db"
  "$COORDINATOR" --listen 127.0.0.1:0 --db "$db/r.db" "$@" > "$db/coordinator.log" 2>&1 &
  local pid=$!
  local port=""
  for _ in $(seq 100); do
    port="$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$db/coordinator.log")"
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "$label: the coordinator did not start: $(tail -1 "$db/coordinator.log")"
    return
  fi
  local start end answer client_kb
  start=$(date +%s.%N)
  answer="$( { /usr/bin/time -f 'client_kb=%M' "$CLIENT" submit --server "127.0.0.1:$port" \
      --model "$file" --dataset idx:/usr/share/datasets/fashion-mnist --strategy grid \
      --grid 'default.weights=fixed:8' 2>&1 || true; } | tr '\n' ' ')"
  end=$(date +%s.%N)
  local hwm
  hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  kill "$pid"; wait "$pid" || true
  client_kb="$(echo "$answer" | sed -n 's/.*client_kb=\([0-9]*\).*/\1/p')"
  printf '%-34s %9s MiB coordinator  %7s MiB client  %6.1f s  %s\n' "$label" \
    "$((hwm / 1024))" "$((client_kb / 1024))" "$(awk "BEGIN {print $end - $start}")" \
    "$(echo "$answer" | sed 's/client_kb=[0-9]*//' | cut -c1-110)"
  rm -rf "$db"
}

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $BUILD"
run_case "valid 210 MB model" "$WORK/m200.onnx"
run_case "valid 1.07 GB model" "$WORK/m1g.onnx"
run_case "1 GiB of random bytes" "$WORK/junk1g.onnx"
run_case "210 MB, --max-model-bytes 1e8" "$WORK/m200.onnx" --max_model_bytes 100000000
