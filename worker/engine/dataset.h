// Datasets resolved on the worker from a reference string, with preprocessing.
//
// References:
//   idx:PREFIX   MNIST-family IDX files PREFIX-images-idx3-ubyte[.gz] and
//                PREFIX-labels-idx1-ubyte[.gz], e.g. idx:/usr/share/datasets/fashion-mnist/t10k.
//                Pixels (uint8) are scaled to [0,1]. Images become [N,1,H,W].
//   npy:IMAGES.npy,LABELS.npy
//                Images as a float32 .npy tensor of shape [N,C,H,W] (or [N,H,W] -> [N,1,H,W], or
//                [N,D]) used as is (no /255 scaling), or as uint8 images [N,H,W], [N,H,W,C]
//                (NHWC: last dimension 1, 3 or 4 and the second not) or [N,C,H,W], which go
//                through the image pipeline below; and an integer .npy label vector (int64,
//                int32 or uint8) of length N.
//   imagefolder:DIR
//                JPEG / PNG files in one subfolder per class (labels: sorted class names), as
//                torchvision's ImageFolder (data/image_list.h).
//   list:FILE.csv
//                "path,label" lines, paths relative to the file's folder.
//
// Image pipeline (imagefolder:, list:, uint8 npy:), equal to torchvision's
// Resize(resize) -> CenterCrop(center_crop) -> ToTensor() -> Normalize(mean, std) on PIL images
// (data/resample.h): decode, convert to `channels` channels, resize, crop, then store uint8
// [N,C,H,W]. Decoding runs once per (files, geometry) on a thread pool; the uint8 tensor is kept
// in memory while in use and in LoadOptions::cache_dir, so the next load decodes nothing, and is
// streamed from that file per batch when larger than LoadOptions::max_resident_bytes. Samples
// become floats as x / 255 then (x - mean[c]) / std[c] only when read (ReadSamples).
//
// Preprocessing: optional per-channel mean/std, x = (x - mean[c]) / std[c]; a single value
// applies to every channel. Subsets: the first `limit` samples, or with `stratified` a
// class-stratified subset of that size (data/image_list.h SelectSubset); image datasets decode
// only the samples they keep.
//
//   ASSIGN_OR_RETURN(Dataset ds, LoadDataset("idx:/usr/share/datasets/fashion-mnist/t10k",
//                                            {.mean = {0.2860f}, .std = {0.3530f}}));
//   RETURN_IF_ERROR(CheckFitsInput(ds, {-1, 1, 28, 28}, "input"));
//   std::vector<float> batch(64 * NumElements(ds.sample_shape()));
//   RETURN_IF_ERROR(ds.ReadSamples(0, 64, batch.data()));
#ifndef BITSWEEP_WORKER_ENGINE_DATASET_H_
#define BITSWEEP_WORKER_ENGINE_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

namespace data {
class PixelStore;
}

struct Preprocessing {
  std::vector<float> mean;  // empty: no mean subtraction
  std::vector<float> std;   // empty: no division; otherwise every value > 0
  int64_t limit = 0;        // > 0: keep only `limit` samples
  bool stratified = false;  // with limit: a class-stratified subset instead of the first samples
  // Image datasets only (imagefolder:, list:, uint8 npy:); an error for float data.
  int channels = 0;          // 1 (grayscale) or 3 (RGB); 0: 3
  int64_t resize = 0;        // > 0: shorter side to this many pixels (bilinear, antialiased)
  int64_t center_crop = 0;   // > 0: centre crop of center_crop x center_crop
  bool bgr = false;          // channel order B, G, R instead of R, G, B
  bool skip_bad_images = false;  // leave undecodable files out (counted) instead of failing
};

// How image datasets are loaded; none of it changes the data.
struct LoadOptions {
  int threads = 0;            // decoding threads; 0: the machine's cores
  std::string cache_dir;      // on-disk cache of decoded images; empty: none
  int64_t max_resident_bytes = int64_t{2} << 30;  // larger image sets stream from cache_dir
};

struct Dataset {
  std::string reference;    // as given to LoadDataset
  Tensor images;            // float32, [N, C, H, W] or [N, D]; empty when `pixels` holds them
  // Image datasets: uint8 [N, C, H, W], normalized per channel when read.
  std::shared_ptr<const data::PixelStore> pixels;
  Shape pixel_shape;                         // [N, C, H, W] of `pixels`
  std::vector<float> pixel_mean, pixel_std;  // per channel
  std::vector<int> labels;  // N labels, each in [0, num_classes)
  int num_classes = 0;      // 1 + the largest label
  // Image datasets: bad files left out (skip_bad_images), the first few of their names, and how
  // many images this load decoded (0: everything came from a cache).
  int64_t skipped_images = 0;
  std::vector<std::string> skipped_names;
  int64_t decoded_images = 0;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // [N, ...]: images.shape() or pixel_shape.
  Shape shape() const;
  // Shape of one sample: shape() without the leading N.
  Shape sample_shape() const;
  // Samples [first, first + count) as preprocessed float32, back to back, into dst. Thread-safe.
  absl::Status ReadSamples(int64_t first, int64_t count, float* dst) const;
};

// Loads and preprocesses a dataset. Errors (InvalidArgument / NotFound) name the file and the
// problem: missing file, truncated data, wrong magic, image/label count mismatch, label out of
// range, bad .npy header or dtype, undecodable image, bad preprocessing values.
absl::StatusOr<Dataset> LoadDataset(const std::string& reference,
                                    const Preprocessing& preprocessing = {},
                                    const LoadOptions& options = {});

// The dataset's kind of reference: "idx", "npy", "imagefolder", "list", or empty when unknown.
std::string DatasetScheme(const std::string& reference);

// Checks that one sample fits a model input of shape `input_shape` (the first dimension is the
// batch and is ignored). Error names the input, both shapes and the dataset reference.
absl::Status CheckFitsInput(const Dataset& dataset, const Shape& input_shape,
                            const std::string& input_name);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_DATASET_H_
