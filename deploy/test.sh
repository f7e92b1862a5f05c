#!/usr/bin/env bash
# The test command: installs dependencies if missing, builds, runs the whole suite with ctest,
# then a 60-second smoke run of each libFuzzer harness (tests/fuzz/run_smoke.sh, own clang build).
# Ends with one line "N passed, M failed" over both (ctest's tests and the fuzz harnesses).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
set +e
(cd "${BITSWEEP_BUILD_DIR:-build}" && ctest --output-on-failure -j 2 --timeout 600) 2>&1 |
  tee "$logs/ctest.log"
ctest_status=${PIPESTATUS[0]}
set -e
summary="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$logs/ctest.log" |
           tail -1)"
ctest_failed="$(echo "$summary" | sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/')"
ctest_total="$(echo "$summary" | sed -E 's/.* out of ([0-9]+).*/\1/')"
if [ -z "$summary" ]; then ctest_failed=1; ctest_total=1; fi
fuzz_status=0
if [ "$ctest_status" -eq 0 ]; then
  bash tests/fuzz/run_smoke.sh 2>&1 | tee "$logs/fuzz.log" || fuzz_status=$?
else
  echo "fuzz: skipped (ctest failed)"
fi
fuzz_passed="$(grep -c '^fuzz: .* ok: ' "$logs/fuzz.log" 2>/dev/null || true)"
fuzz_failed="$(grep -c '^fuzz: .* FAILED ' "$logs/fuzz.log" 2>/dev/null || true)"
if [ "$fuzz_status" -ne 0 ] && [ "${fuzz_failed:-0}" -eq 0 ]; then fuzz_failed=1; fi  # e.g. no build
echo "$((ctest_total - ctest_failed + ${fuzz_passed:-0})) passed, $((ctest_failed + ${fuzz_failed:-0})) failed"
[ "$ctest_status" -eq 0 ] && [ "$fuzz_status" -eq 0 ]
