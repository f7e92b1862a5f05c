// Fuzzes the IDX reader (LoadDataset "idx:PREFIX"): an image file and a label file, raw or
// gzip-named, with preprocessing settings (dataset_fuzz.h); input layout in fuzz_util.h.
// settings[0] bit 4: the image file is named ...-images-idx3-ubyte.gz; bit 5: the label file
// .gz (zlib reads plain and gzip data under either name).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "tests/fuzz/dataset_fuzz.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitsweep::fuzz;
  TwoFileInput input;
  if (!SplitInput(data, size, input)) return 0;
  const std::string prefix = ScratchDir() + "/case";
  const std::string images = prefix + "-images-idx3-ubyte", labels = prefix + "-labels-idx1-ubyte";
  for (const std::string& path : {images, labels}) {
    std::filesystem::remove(path);
    std::filesystem::remove(path + ".gz");
  }
  WriteFile(images + ((input.settings[0] & 16) ? ".gz" : ""), input.first);
  WriteFile(labels + ((input.settings[0] & 32) ? ".gz" : ""), input.second);
  LoadAndRead("idx:" + prefix, PreprocessingOf(input.settings));
  return 0;
}
