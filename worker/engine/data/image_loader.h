// Decodes and preprocesses a set of images once: a pool of threads decodes ahead of an in-order
// writer (a bounded prefetch window), and the resulting uint8 tensor [N, C, H, W] is kept per
// content key in this process (while anyone holds it) and in an on-disk cache file, so later
// loads -- the next trial of a sweep, the next command -- decode nothing.
//
//   FileImageSource source(entries);                  // or any ImageSource
//   ASSIGN_OR_RETURN(std::shared_ptr<const LoadedPixels> pixels,
//                    LoadPixels(source, labels, {.channels = 3, .resize = 256, .crop = 224},
//                               {.threads = 2, .cache_path = dir + "/" + key + ".pixels"},
//                               key));
//
// Per image: Load (decode, channel conversion as in image_decode.h), Resize(resize) and
// CenterCrop(crop) as in resample.h, the channel order reversed for BGR, then laid out CHW.
// Without resize/crop every image must already have one size; an image of another size is an
// error naming it. A bad image is an error naming it, or, with skip_bad, left out and counted.
#ifndef BITSWEEP_WORKER_ENGINE_DATA_IMAGE_LOADER_H_
#define BITSWEEP_WORKER_ENGINE_DATA_IMAGE_LOADER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/data/image_decode.h"
#include "worker/engine/data/image_list.h"
#include "worker/engine/data/pixel_store.h"

namespace bitsweep::engine::data {

// The images of a dataset, by index. Load is called from several threads at once.
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int64_t size() const = 0;
  virtual std::string name(int64_t i) const = 0;  // for messages: usually the path
  // The decoded image with `channels` (1 or 3) channels.
  virtual absl::StatusOr<Image> Load(int64_t i, int channels) const = 0;
};

// Image files (JPEG, PNG) read from disk.
class FileImageSource : public ImageSource {
 public:
  explicit FileImageSource(std::vector<ImageEntry> entries) : entries_(std::move(entries)) {}
  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  std::string name(int64_t i) const override { return entries_[static_cast<size_t>(i)].path; }
  absl::StatusOr<Image> Load(int64_t i, int channels) const override;

 private:
  std::vector<ImageEntry> entries_;
};

struct PipelineSpec {
  int channels = 3;        // 1 (grayscale) or 3 (RGB)
  int64_t resize = 0;      // > 0: shorter side to this many pixels
  int64_t crop = 0;        // > 0: centre crop to crop x crop
  bool bgr = false;        // three channels stored B, G, R
  bool skip_bad = false;   // leave undecodable images out instead of failing
};

struct LoaderOptions {
  int threads = 0;              // decoding threads; 0: the machine's cores
  std::string cache_path;       // the on-disk cache file; empty: none
  int64_t max_resident_bytes = int64_t{2} << 30;  // larger sets stream from cache_path
};

struct LoadedPixels {
  Shape shape;              // [N, C, H, W] of the kept images
  std::vector<int> labels;  // N
  int64_t skipped = 0;      // bad images left out (skip_bad)
  std::vector<std::string> skipped_names;  // the first of them
  std::shared_ptr<const PixelStore> store;
};

// The pixels of `source` (labels[i] belongs to image i) under `spec`. `key` names the content
// (source files and spec) for the in-process cache; empty: no in-process caching. `decoded`
// (optional) receives how many images this call decoded: 0 when it found them cached.
absl::StatusOr<std::shared_ptr<const LoadedPixels>> LoadPixels(
    const ImageSource& source, const std::vector<int>& labels, const PipelineSpec& spec,
    const LoaderOptions& options, const std::string& key, int64_t* decoded = nullptr);

// Pixel sets the in-process cache knows (alive or not yet swept); for tests.
size_t PixelSetsInMemoryForTest();

// One image through the pipeline: `image` (spec.channels channels, HWC) to CHW bytes, with its
// final height and width.
std::vector<uint8_t> PreprocessImage(Image image, const PipelineSpec& spec, int64_t* height,
                                     int64_t* width);

}  // namespace bitsweep::engine::data

#endif  // BITSWEEP_WORKER_ENGINE_DATA_IMAGE_LOADER_H_
