#!/usr/bin/env bash
# The main job on the embedded default: installs dependencies if missing, builds, then runs a
# Ristretto sweep of our LeNet-5 on Debian's Fashion-MNIST with `bitsweep local` (a coordinator
# and two workers in one process, results in results.db) and prints its frontier: which widths
# each layer class can use within 1 point of top-1, and what each costs in size and energy.
# zoo:lenet5 is trained with our own engine on first use (about 3 minutes) and cached.
# Extra arguments go to `bitsweep local` (e.g. --strategy sensitivity, --workers 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
B="${BITSWEEP_BUILD_DIR:-build}/client/bitsweep"
"$B" local --model zoo:lenet5 --dataset idx:/usr/share/datasets/fashion-mnist \
    --mean 0.2860 --std 0.3530 --strategy ristretto --error-margin 1.0 --finetune-steps 1000 \
    --workers 2 --threads 2 --db "${BITSWEEP_RESULTS_DB:-results.db}" "$@"
