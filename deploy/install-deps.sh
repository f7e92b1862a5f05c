#!/usr/bin/env bash
# Installs every Debian 12 package that bitsweep's build, tests, benchmarks and demo need.
# Idempotent: packages already present are skipped; safe to run on every CI start.
# Works with --no-install-recommends, so recommended-only packages are named explicitly
# (ocl-icd-opencl-dev: find_package(dnnl) needs the OpenCL headers).
set -euo pipefail

# What compiling the three binaries needs (`--build-only`: the Docker image's build stage, with
# -DBITSWEEP_BUILD_TESTS=OFF).
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
)
# Everything else: tests, benchmarks, data, and the operations tests (tests/ops: Prometheus and
# promtool, Docker and Compose, mmdebstrap for the base image, PyYAML for the manifest checks;
# matplotlib for the dashboard pictures of docs/DEPLOY.md).
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  git sqlite3
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  dataset-fashion-mnist libonnx-testdata
  time
  prometheus
  docker.io docker-compose mmdebstrap
  python3-matplotlib python3-yaml
)
if [ "${1:-}" = "--build-only" ]; then PACKAGES=("${BUILD_PACKAGES[@]}"); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
