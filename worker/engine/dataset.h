// Datasets resolved on the worker from a reference string, with preprocessing.
//
// References:
//   idx:PREFIX   MNIST-family IDX files PREFIX-images-idx3-ubyte[.gz] and
//                PREFIX-labels-idx1-ubyte[.gz], e.g. idx:/usr/share/datasets/fashion-mnist/t10k.
//                Pixels (uint8) are scaled to [0,1]. Images become [N,1,H,W].
//   npy:IMAGES.npy,LABELS.npy
//                A float32 .npy tensor of shape [N,C,H,W] (or [N,H,W] -> [N,1,H,W], or [N,D]) used
//                as is (no /255 scaling), and an integer .npy label vector (int64, int32 or uint8)
//                of length N.
// Preprocessing: optional per-channel mean/std, x = (x - mean[c]) / std[c]; a single value
// applies to every channel.
//
//   ASSIGN_OR_RETURN(Dataset ds, LoadDataset("idx:/usr/share/datasets/fashion-mnist/t10k",
//                                            {.mean = {0.2860f}, .std = {0.3530f}}));
//   RETURN_IF_ERROR(CheckFitsInput(ds, {-1, 1, 28, 28}, "input"));
#ifndef BITSWEEP_WORKER_ENGINE_DATASET_H_
#define BITSWEEP_WORKER_ENGINE_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

struct Preprocessing {
  std::vector<float> mean;  // empty: no mean subtraction
  std::vector<float> std;   // empty: no division; otherwise every value > 0
  int64_t limit = 0;        // > 0: keep only the first `limit` samples
};

struct Dataset {
  std::string reference;    // as given to LoadDataset
  Tensor images;            // float32, [N, C, H, W] or [N, D]
  std::vector<int> labels;  // N labels, each in [0, num_classes)
  int num_classes = 0;      // 1 + the largest label

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // Shape of one sample: images.shape() without the leading N.
  Shape sample_shape() const;
};

// Loads and preprocesses a dataset. Errors (InvalidArgument / NotFound) name the file and the
// problem: missing file, truncated data, wrong magic, image/label count mismatch, label out of
// range, bad .npy header or dtype, bad preprocessing values.
absl::StatusOr<Dataset> LoadDataset(const std::string& reference,
                                    const Preprocessing& preprocessing = {});

// Checks that one sample fits a model input of shape `input_shape` (the first dimension is the
// batch and is ignored). Error names the input, both shapes and the dataset reference.
absl::Status CheckFitsInput(const Dataset& dataset, const Shape& input_shape,
                            const std::string& input_name);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_DATASET_H_
