#!/usr/bin/env bash
# The test command: installs dependencies if missing, builds, runs the whole suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
cd "${BITSWEEP_BUILD_DIR:-build}"
ctest --output-on-failure -j 2 --timeout 600
