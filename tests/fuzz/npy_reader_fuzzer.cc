// Fuzzes the .npy reader (LoadDataset "npy:IMAGES.npy,LABELS.npy"): float32 images used as they
// are, uint8 images through the image pipeline (channels, resize, crop, BGR), integer labels;
// preprocessing settings in dataset_fuzz.h, input layout in fuzz_util.h.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/dataset_fuzz.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitsweep::fuzz;
  TwoFileInput input;
  if (!SplitInput(data, size, input)) return 0;
  const std::string images = ScratchDir() + "/images.npy", labels = ScratchDir() + "/labels.npy";
  WriteFile(images, input.first);
  WriteFile(labels, input.second);
  LoadAndRead("npy:" + images + "," + labels, PreprocessingOf(input.settings));
  return 0;
}
