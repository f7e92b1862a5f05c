#!/usr/bin/env bash
# Installs every Debian 12 package that bitsweep's build, tests, benchmarks and demo need.
# Idempotent: packages already present are skipped; safe to run on every CI start. Also installs
# ONNX Runtime from npm for the export tests (see the end).
# Works with --no-install-recommends, so recommended-only packages are named explicitly
# (ocl-icd-opencl-dev: find_package(dnnl) needs the OpenCL headers; libclang-rt-dev: the
# libFuzzer and sanitizer runtimes of clang, tests/fuzz).
# `--build-only`: just what compiling the three binaries needs (the Docker image's build stage,
# with -DBITSWEEP_BUILD_TESTS=OFF); no npm.
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libabsl-dev
  libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc
  libdnnl-dev ocl-icd-opencl-dev
  libonnx-dev
  libsqlite3-dev
  prometheus-cpp-dev
  zlib1g-dev nlohmann-json3-dev libssl-dev
  libjpeg62-turbo-dev libpng-dev
)
# Everything else: tests, benchmarks, data, real-model exports (PyTorch), figures (rsvg-convert,
# chromium for the report), and the operations tests (tests/ops: Prometheus and promtool, Docker
# and Compose, mmdebstrap for the base image, PyYAML for the manifest checks; matplotlib for the
# dashboard pictures of docs/DEPLOY.md).
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  git sqlite3
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3-pil python3-torch python3-torchvision python3-numpy python3-onnx
  dataset-fashion-mnist libonnx-testdata
  time
  clang libclang-rt-dev
  librsvg2-bin fonts-dejavu-core chromium
  prometheus
  docker.io docker-compose mmdebstrap iproute2
  python3-matplotlib python3-yaml
)
BUILD_ONLY=0
if [ "${1:-}" = "--build-only" ]; then PACKAGES=("${BUILD_PACKAGES[@]}"); BUILD_ONLY=1; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Node.js and npm run ONNX Runtime for the export tests (below). A machine that already has them
# (e.g. a newer Node.js with its own npm) keeps its own: Debian's npm would conflict with it.
if [ "$BUILD_ONLY" -eq 0 ] && { ! command -v node >/dev/null || ! command -v npm >/dev/null; }; then
  missing+=(nodejs npm)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ "$BUILD_ONLY" -eq 1 ]; then exit 0; fi

# ONNX Runtime (CPU) for the QDQ export tests (tests/export/ort): npm's onnxruntime-node at the
# version pinned in tests/export/ort/package-lock.json, into that folder's node_modules
# (git-ignored). --ignore-scripts: its install script only fetches GPU builds; the CPU library and
# the Node binding for linux-x64 ship inside the package. Skipped when that version is present.
ORT_DIR="$(cd "$(dirname "$0")/../tests/export/ort" && pwd)"
ort_wanted="$(node -p "require('$ORT_DIR/package-lock.json')
                       .packages['node_modules/onnxruntime-node'].version")"
ort_present="$(cd "$ORT_DIR" &&
               node -p "require('onnxruntime-node').env.versions.node" 2>/dev/null || true)"
if [ "$ort_present" = "$ort_wanted" ]; then
  echo "install-deps: onnxruntime-node $ort_wanted present"
else
  echo "install-deps: installing onnxruntime-node $ort_wanted into $ORT_DIR/node_modules"
  (cd "$ORT_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  (cd "$ORT_DIR" && node -e "require('onnxruntime-node')")
fi
