// Preprocessed 8-bit images [N, C, H, W], resident in memory or streamed from a cache file, and
// the on-disk cache file format that holds them.
//
// A PixelStore hands out samples by index; the dataset turns them into normalized floats one
// batch at a time, so a 50,000-image set at 3x224x224 (7.5 GB as uint8) never needs to be held:
// above LoadOptions::max_resident_bytes it is read with pread from the cache file per batch (the
// page cache, not the process, holds what the OS keeps).
//
// Cache file (little-endian): "BSWPIX1\n", the pixels of N samples back to back, int32 labels[N],
// the skipped files' names joined by '\n', then a 64-byte footer: int64 n, c, h, w, skipped,
// names_bytes, file_bytes, and "BSWPIX1\n" again. Files are written under a temporary name and
// renamed into place, so a reader sees a complete file or none.
//
//   PixelCacheWriter w;  RETURN_IF_ERROR(w.Open(path));  w.Append(chw, bytes);  ...
//   RETURN_IF_ERROR(w.Finish({n, c, h, w}, labels, skipped, names));
//   ASSIGN_OR_RETURN(std::optional<CachedPixels> hit, ReadPixelCache(path, 1 << 30));
#ifndef BITSWEEP_WORKER_ENGINE_DATA_PIXEL_STORE_H_
#define BITSWEEP_WORKER_ENGINE_DATA_PIXEL_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine::data {

// Where the pixels start in a cache file (after the magic).
inline constexpr int64_t kPixelCacheDataOffset = 8;

class PixelStore {
 public:
  static std::shared_ptr<const PixelStore> Resident(int64_t n, int64_t sample_bytes,
                                                    std::vector<uint8_t> pixels);
  // Samples at `offset` in `path`, read on demand.
  static absl::StatusOr<std::shared_ptr<const PixelStore>> Streamed(const std::string& path,
                                                                    int64_t offset, int64_t n,
                                                                    int64_t sample_bytes);
  ~PixelStore();
  PixelStore(const PixelStore&) = delete;
  PixelStore& operator=(const PixelStore&) = delete;

  int64_t size() const { return n_; }
  int64_t sample_bytes() const { return sample_bytes_; }
  bool resident() const { return fd_ < 0; }
  // Copies samples [first, first + count) into dst. Thread-safe.
  absl::Status Read(int64_t first, int64_t count, uint8_t* dst) const;

 private:
  PixelStore() = default;
  int64_t n_ = 0, sample_bytes_ = 0;
  std::vector<uint8_t> pixels_;  // resident
  int fd_ = -1;                  // streamed
  int64_t offset_ = 0;
  std::string path_;
};

struct CachedPixels {
  Shape shape;  // [N, C, H, W]
  std::vector<int> labels;
  int64_t skipped = 0;
  std::vector<std::string> skipped_names;
  std::shared_ptr<const PixelStore> store;
};

// The cache file at `path`: nullopt when there is none or it is unreadable or inconsistent (a
// partial or foreign file is a miss, not an error). Sets of at most `max_resident_bytes` are read
// into memory, larger ones streamed.
absl::StatusOr<std::optional<CachedPixels>> ReadPixelCache(const std::string& path,
                                                           int64_t max_resident_bytes);

class PixelCacheWriter {
 public:
  PixelCacheWriter() = default;
  ~PixelCacheWriter();  // removes an unfinished temporary file
  PixelCacheWriter(const PixelCacheWriter&) = delete;
  PixelCacheWriter& operator=(const PixelCacheWriter&) = delete;

  absl::Status Open(const std::string& path);
  absl::Status Append(const uint8_t* data, int64_t bytes);
  // Writes labels and footer and renames the file into place.
  absl::Status Finish(const Shape& shape, const std::vector<int>& labels, int64_t skipped,
                      const std::vector<std::string>& skipped_names);
  const std::string& path() const { return path_; }

 private:
  absl::Status Write(const void* data, int64_t bytes);
  std::string path_, temp_path_;
  int fd_ = -1;
  int64_t written_ = 0;
};

}  // namespace bitsweep::engine::data

#endif  // BITSWEEP_WORKER_ENGINE_DATA_PIXEL_STORE_H_
