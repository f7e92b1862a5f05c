#!/usr/bin/env bash
# The test command: installs dependencies if missing, builds, runs the whole suite with ctest,
# then a 60-second smoke run of each libFuzzer harness (tests/fuzz/run_smoke.sh, own clang build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
(cd "${BITSWEEP_BUILD_DIR:-build}" && ctest --output-on-failure -j 2 --timeout 600)
bash tests/fuzz/run_smoke.sh
