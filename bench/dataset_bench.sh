#!/usr/bin/env bash
# Image dataset benchmarks for docs/BENCHMARKS.md (one run; 2 threads everywhere):
#  1. decode + preprocess (Resize 256 -> CenterCrop 224 -> normalize) images/s on 2,000 500x375
#     JPEGs: bitsweep's loader vs torchvision ImageFolder + DataLoader(num_workers=2);
#  2. first vs second evaluation of a random-init torchvision resnet18 (ONNX, opset 13) on them:
#     the first decodes, the second (a new process) reads the on-disk cache;
#  3. peak RSS with N_LARGE (default 50,000) images (hard links to the 2,000 files), which as
#     uint8 3x224x224 exceed the 2 GiB resident limit and stream from the cache file, against the
#     2,000-image set held in memory.
# Usage: bash bench/dataset_bench.sh [WORK_DIR]   (needs ~8 GB free in WORK_DIR for the cache)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BITSWEEP_BUILD_DIR:-build}"
W="${1:-/tmp/bitsweep-dataset-bench}"
N_LARGE="${N_LARGE:-50000}"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
cmake --build "$BUILD" --target dataset_bench -j 2 > /dev/null
B="$BUILD/bench/dataset_bench"
mkdir -p "$W"
if [ ! -d "$W/jpeg" ]; then
  echo "== writing 2,000 JPEGs (500x375, quality 90)"
  $PY bench/dataset_images.py make "$W/jpeg" 2000 500 375
fi
[ -f "$W/resnet18.onnx" ] || $PY bench/dataset_images.py model "$W/resnet18.onnx" resnet18
[ -f "$W/tiny224.onnx" ] || $PY bench/dataset_images.py model "$W/tiny224.onnx" tiny224
GEOM="--resize 256 --center_crop 224 --threads 2"

echo "== 1. decode + preprocess, 2 threads (no cache), twice each"
for i in 1 2; do "$B" --dataset "imagefolder:$W/jpeg" $GEOM; done
for i in 1 2; do $PY bench/dataset_images.py torchvision "$W/jpeg" 2; done

echo "== 2. resnet18 at 224 px: first evaluation (decodes), second (new process, cached)"
rm -rf "$W/cache"
"$B" --dataset "imagefolder:$W/jpeg" $GEOM --cache_dir "$W/cache" --model "$W/resnet18.onnx" --batch 32
"$B" --dataset "imagefolder:$W/jpeg" $GEOM --cache_dir "$W/cache" --model "$W/resnet18.onnx" --batch 32

echo "== 3. peak RSS: $N_LARGE images streamed from the cache file vs 2,000 resident"
if [ ! -d "$W/large" ]; then
  mkdir -p "$W/large"
  files=("$W"/jpeg/*/*.jpg)
  for ((i = 0; i < N_LARGE; i++)); do
    f="${files[$((i % ${#files[@]}))]}"
    c="$W/large/$(basename "$(dirname "$f")")"
    mkdir -p "$c"
    ln -f "$f" "$c/$(printf %06d $i).jpg"
  done
fi
rm -rf "$W/cache-large"
for run in first second; do
  /usr/bin/time -f "peak RSS %M KB, %e s wall ($run run, $N_LARGE images)" \
    "$B" --dataset "imagefolder:$W/large" $GEOM --cache_dir "$W/cache-large" --model "$W/tiny224.onnx"
done
/usr/bin/time -f "peak RSS %M KB, %e s wall (2,000 images resident)" \
  "$B" --dataset "imagefolder:$W/jpeg" $GEOM --cache_dir "$W/cache" --model "$W/tiny224.onnx"
ls -l "$W/cache-large"
