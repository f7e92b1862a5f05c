// The shared body of the dataset harnesses (idx_reader_fuzzer.cc, npy_reader_fuzzer.cc): the
// preprocessing a harness input's setting bytes select, and LoadDataset plus ReadSamples of every
// sample with the properties every loaded dataset must have.
//
//   PreprocessingOf(input.settings)  // limit, stratified, mean/std, channels, resize, crop, bgr
//   LoadAndRead("npy:" + images + "," + labels, PreprocessingOf(input.settings));
#ifndef BITSWEEP_TESTS_FUZZ_DATASET_FUZZ_H_
#define BITSWEEP_TESTS_FUZZ_DATASET_FUZZ_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/engine/dataset.h"

namespace bitsweep::fuzz {

// settings[0] bits: 0 limit (settings[1] samples), 1 stratified, 2 one mean/std value, 3 three
// (2 and 3: four, a count no dataset fits), 6 BGR, 7 grayscale. settings[2] % 33: resize,
// settings[3] % 33: centre crop (image datasets; both small so that a case stays fast).
inline engine::Preprocessing PreprocessingOf(const uint8_t settings[4]) {
  engine::Preprocessing pre;
  const uint8_t flags = settings[0];
  if (flags & 1) pre.limit = settings[1];
  pre.stratified = (flags & 2) != 0;
  const int values = ((flags >> 2) & 1) + ((flags >> 3) & 1) * 3;
  for (int i = 0; i < values; ++i) {
    pre.mean.push_back(0.1f * static_cast<float>(i + 1));
    pre.std.push_back(0.25f * static_cast<float>(i + 1));
  }
  pre.bgr = (flags & 64) != 0;
  pre.channels = (flags & 128) != 0 ? 1 : 3;
  pre.resize = settings[2] % 33;
  pre.center_crop = settings[3] % 33;
  return pre;
}

// Loads `reference`; on success checks the dataset's shape and labels and reads every sample.
inline void LoadAndRead(const std::string& reference, const engine::Preprocessing& pre) {
  engine::LoadOptions options;
  options.threads = 1;
  absl::StatusOr<engine::Dataset> ds = engine::LoadDataset(reference, pre, options);
  if (!ds.ok()) {
    FUZZ_CHECK(!ds.status().message().empty());
    return;
  }
  const engine::Shape shape = ds->shape();
  FUZZ_CHECK(!shape.empty() && shape[0] == ds->size());
  if (pre.limit > 0) FUZZ_CHECK(ds->size() <= pre.limit);
  for (int label : ds->labels) FUZZ_CHECK(label >= 0 && label < ds->num_classes);
  const int64_t sample = engine::NumElements(ds->sample_shape());
  FUZZ_CHECK(sample >= 0);
  if (ds->pixels == nullptr) {
    FUZZ_CHECK(ds->images.num_elements() == ds->size() * sample);
  }
  std::vector<float> batch;
  for (int64_t first = 0; first < ds->size(); first += 8) {
    const int64_t count = std::min<int64_t>(8, ds->size() - first);
    batch.assign(static_cast<size_t>(count * sample), NAN);
    absl::Status read = ds->ReadSamples(first, count, batch.data());
    FUZZ_CHECK(read.ok());
    if (ds->pixels != nullptr) {  // uint8 pixels normalized by finite mean and std > 0
      for (float v : batch) FUZZ_CHECK(std::isfinite(v));
    }
  }
  FUZZ_CHECK(!ds->ReadSamples(ds->size(), 1, batch.data()).ok());
}

}  // namespace bitsweep::fuzz

#endif  // BITSWEEP_TESTS_FUZZ_DATASET_FUZZ_H_
