#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan; CMakeLists.txt here) into their own build
# folder and runs each over its seed corpus for a fixed time, two at a time. Fails when a harness
# finds a crash, a hang (> 30 s on one input), a leak, undefined behaviour or runs out of memory
# (> 2 GB), printing the report and where the input was saved. deploy/test.sh runs it (60 s each).
#
#   bash tests/fuzz/run_smoke.sh                          # every harness, 60 s each
#   BITSWEEP_FUZZ_SECONDS=600 bash tests/fuzz/run_smoke.sh onnx_import npy_reader
#
# Environment: BITSWEEP_FUZZ_BUILD_DIR (build-fuzz), BITSWEEP_FUZZ_SECONDS (60),
# BITSWEEP_FUZZ_PARALLEL (2 harnesses at once), BITSWEEP_FUZZ_OUT (the corpus each run grew, its
# log and any crash input; default: a temp folder, removed when every harness passed).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BITSWEEP_FUZZ_BUILD_DIR:-build-fuzz}"
SECONDS_EACH="${BITSWEEP_FUZZ_SECONDS:-60}"
PARALLEL="${BITSWEEP_FUZZ_PARALLEL:-2}"
# A fixed seed makes CI runs repeat the same mutations (a finding reproduces; a change of seed explores).
SEED="${BITSWEEP_FUZZ_SEED:-1}"
OUT="${BITSWEEP_FUZZ_OUT:-$(mktemp -d /tmp/bitsweep-fuzz.XXXXXX)}"
mkdir -p "$OUT"
rm -f "$OUT/failed"
HARNESSES=("$@")
if [ "${#HARNESSES[@]}" -eq 0 ]; then
  HARNESSES=(onnx_import idx_reader npy_reader quant_config quant_format sweep_spec)
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBITSWEEP_FUZZ=ON >/dev/null
fi
build_start=$(date +%s)
cmake --build "$BUILD_DIR" --target fuzz_all -j "${BITSWEEP_JOBS:-2}"
echo "fuzz: harnesses built in $(( $(date +%s) - build_start )) s"

# Runs one harness; its log is $OUT/NAME.log, its grown corpus $OUT/NAME/ (the seeds stay as they
# are), a crash input $OUT/NAME-crash-* (or -timeout-, -leak-, -oom-).
run_one() {
  local name="$1"
  mkdir -p "$OUT/$name"
  "$BUILD_DIR/tests/fuzz/fuzz_$name" "$OUT/$name" "tests/fuzz/corpus/$name" \
    -seed="$SEED" -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$OUT/$name-" >"$OUT/$name.log" 2>&1
}
export -f run_one
export BUILD_DIR SECONDS_EACH OUT SEED

smoke_start=$(date +%s)
failed=0
printf '%s\n' "${HARNESSES[@]}" |
  xargs -P "$PARALLEL" -I{} bash -c 'run_one {} || echo {} >>"$OUT/failed"' || true
for name in "${HARNESSES[@]}"; do
  log="$OUT/$name.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if grep -qx "$name" "$OUT/failed" 2>/dev/null; then
    failed=1
    echo "fuzz: $name FAILED after ${runs:-?} runs; input saved as:" $(ls "$OUT/$name-"* 2>/dev/null)
    grep -v '^#[0-9]' "$log" | tail -40
  else
    echo "fuzz: $name ok: ${runs:-?} runs, ${rate:-?} exec/s, coverage ${cov:-?} edges," \
         "corpus $(ls "$OUT/$name" | wc -l) + $(ls "tests/fuzz/corpus/$name" | wc -l) seeds"
  fi
done
echo "fuzz: ${#HARNESSES[@]} harnesses x ${SECONDS_EACH} s in $(( $(date +%s) - smoke_start )) s"
if [ "$failed" -eq 0 ] && [ -z "${BITSWEEP_FUZZ_OUT:-}" ]; then
  rm -rf "$OUT"  # a temp folder of our own: nothing to look at
else
  echo "fuzz: logs, grown corpora and findings in $OUT"
fi
exit "$failed"
