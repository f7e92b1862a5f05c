// Which image files a dataset reference names, with their labels, and deterministic subsets.
//
//   imagefolder:DIR  one subfolder per class; labels are the indices of the sorted class names
//                    and files are taken in sorted order, recursively -- torchvision's
//                    ImageFolder convention. Files ending in .jpg, .jpeg or .png (any case) are
//                    images; other image types torchvision lists (.bmp, .ppm, .pgm, .tif, .tiff,
//                    .webp) are listed too and fail to decode with a message naming them, so a
//                    folder never silently loses samples; anything else is ignored.
//   list:FILE.csv    lines "path,label" (label a non-negative integer), paths relative to the
//                    file's folder; blank lines, lines starting with '#' and a first line whose
//                    label is not a number (a header) are skipped.
//
//   ASSIGN_OR_RETURN(ImageList list, ListImageFolder("/data/val"));
//   std::vector<int64_t> keep = SelectSubset(labels, 1000, /*stratified=*/true);
#ifndef BITSWEEP_WORKER_ENGINE_DATA_IMAGE_LIST_H_
#define BITSWEEP_WORKER_ENGINE_DATA_IMAGE_LIST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bitsweep::engine::data {

struct ImageEntry {
  std::string path;  // as opened (absolute or relative to the working directory)
  int label = 0;
};

struct ImageList {
  std::vector<ImageEntry> entries;
  std::vector<std::string> class_names;  // imagefolder: the sorted subfolder names
};

absl::StatusOr<ImageList> ListImageFolder(const std::string& dir);
absl::StatusOr<ImageList> ListCsv(const std::string& file);

// Indices (ascending) of the samples to keep. limit <= 0 or >= N: all. Not stratified: the first
// `limit`. Stratified: each class keeps a share proportional to its size (largest remainders,
// ties to the lower class), taking its samples in order -- the same subset on every machine.
std::vector<int64_t> SelectSubset(const std::vector<int>& labels, int64_t limit, bool stratified);

}  // namespace bitsweep::engine::data

#endif  // BITSWEEP_WORKER_ENGINE_DATA_IMAGE_LIST_H_
