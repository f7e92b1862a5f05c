#!/usr/bin/env bash
# Configures and builds bitsweep (Release, Ninja, ccache when present) into ./build.
# Used by deploy/test.sh and deploy/demo.sh; safe to run repeatedly (incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BITSWEEP_BUILD_DIR:-build}"
JOBS="${BITSWEEP_JOBS:-2}"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
