#include "worker/engine/data/pixel_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace bitsweep::engine::data {
namespace {

constexpr char kMagic[8] = {'B', 'S', 'W', 'P', 'I', 'X', '1', '\n'};
constexpr int64_t kFooterBytes = 64;

absl::Status PreadAll(int fd, uint8_t* dst, int64_t bytes, int64_t offset,
                      const std::string& path) {
  while (bytes > 0) {
    const ssize_t got = pread(fd, dst, static_cast<size_t>(bytes), offset);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      return absl::DataLossError(absl::StrCat("cache file '", path, "': read failed: ",
                                              got < 0 ? std::strerror(errno) : "unexpected end"));
    }
    dst += got;
    bytes -= got;
    offset += got;
  }
  return absl::OkStatus();
}

}  // namespace

std::shared_ptr<const PixelStore> PixelStore::Resident(int64_t n, int64_t sample_bytes,
                                                       std::vector<uint8_t> pixels) {
  std::shared_ptr<PixelStore> store(new PixelStore());
  store->n_ = n;
  store->sample_bytes_ = sample_bytes;
  store->pixels_ = std::move(pixels);
  return store;
}

absl::StatusOr<std::shared_ptr<const PixelStore>> PixelStore::Streamed(const std::string& path,
                                                                       int64_t offset, int64_t n,
                                                                       int64_t sample_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cache file '", path, "': cannot open: ", std::strerror(errno)));
  }
  std::shared_ptr<PixelStore> store(new PixelStore());
  store->n_ = n;
  store->sample_bytes_ = sample_bytes;
  store->fd_ = fd;
  store->offset_ = offset;
  store->path_ = path;
  return store;
}

PixelStore::~PixelStore() {
  if (fd_ >= 0) close(fd_);
}

absl::Status PixelStore::Read(int64_t first, int64_t count, uint8_t* dst) const {
  if (first < 0 || count < 0 || first + count > n_) {
    return absl::OutOfRangeError(
        absl::StrCat("samples [", first, ", ", first + count, ") outside [0, ", n_, ")"));
  }
  const int64_t bytes = count * sample_bytes_;
  if (fd_ < 0) {
    std::memcpy(dst, pixels_.data() + first * sample_bytes_, static_cast<size_t>(bytes));
    return absl::OkStatus();
  }
  return PreadAll(fd_, dst, bytes, offset_ + first * sample_bytes_, path_);
}

absl::StatusOr<std::optional<CachedPixels>> ReadPixelCache(const std::string& path,
                                                           int64_t max_resident_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::optional<CachedPixels>();
  struct FdCloser {
    int fd;
    ~FdCloser() { close(fd); }
  } closer{fd};
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(kMagic) + kFooterBytes)) {
    return std::optional<CachedPixels>();
  }
  const int64_t file_bytes = st.st_size;
  uint8_t footer[kFooterBytes];
  char magic[8];
  if (!PreadAll(fd, footer, kFooterBytes, file_bytes - kFooterBytes, path).ok() ||
      !PreadAll(fd, reinterpret_cast<uint8_t*>(magic), 8, 0, path).ok() ||
      std::memcmp(magic, kMagic, 8) != 0 || std::memcmp(footer + 56, kMagic, 8) != 0) {
    return std::optional<CachedPixels>();
  }
  int64_t v[7];
  std::memcpy(v, footer, sizeof(v));
  const int64_t n = v[0], c = v[1], h = v[2], w = v[3], skipped = v[4], names_bytes = v[5];
  if (v[6] != file_bytes || n < 0 || c < 1 || h < 1 || w < 1 || names_bytes < 0 || skipped < 0) {
    return std::optional<CachedPixels>();
  }
  const int64_t sample = c * h * w;
  const int64_t pixel_bytes = n * sample;
  if (static_cast<int64_t>(sizeof(kMagic)) + pixel_bytes + n * 4 + names_bytes + kFooterBytes !=
      file_bytes) {
    return std::optional<CachedPixels>();
  }
  CachedPixels cached;
  cached.shape = {n, c, h, w};
  cached.skipped = skipped;
  cached.labels.resize(static_cast<size_t>(n));
  const int64_t labels_offset = sizeof(kMagic) + pixel_bytes;
  RETURN_IF_ERROR(PreadAll(fd, reinterpret_cast<uint8_t*>(cached.labels.data()), n * 4,
                           labels_offset, path));
  std::string names(static_cast<size_t>(names_bytes), '\0');
  RETURN_IF_ERROR(PreadAll(fd, reinterpret_cast<uint8_t*>(names.data()), names_bytes,
                           labels_offset + n * 4, path));
  if (!names.empty()) cached.skipped_names = absl::StrSplit(names, '\n');
  if (pixel_bytes <= max_resident_bytes) {
    std::vector<uint8_t> pixels(static_cast<size_t>(pixel_bytes));
    RETURN_IF_ERROR(PreadAll(fd, pixels.data(), pixel_bytes, sizeof(kMagic), path));
    cached.store = PixelStore::Resident(n, sample, std::move(pixels));
  } else {
    ASSIGN_OR_RETURN(cached.store, PixelStore::Streamed(path, sizeof(kMagic), n, sample));
  }
  return std::optional<CachedPixels>(std::move(cached));
}

PixelCacheWriter::~PixelCacheWriter() {
  if (fd_ >= 0) {
    close(fd_);
    unlink(temp_path_.c_str());
  }
}

absl::Status PixelCacheWriter::Open(const std::string& path) {
  static std::atomic<int64_t> counter{0};
  path_ = path;
  temp_path_ = absl::StrCat(path, ".tmp.", getpid(), ".", counter.fetch_add(1));
  fd_ = open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create cache file '", temp_path_, "': ", std::strerror(errno)));
  }
  return Write(kMagic, sizeof(kMagic));
}

absl::Status PixelCacheWriter::Write(const void* data, int64_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = write(fd_, p, static_cast<size_t>(bytes));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot write cache file '", temp_path_, "': ", std::strerror(errno)));
    }
    p += n;
    bytes -= n;
    written_ += n;
  }
  return absl::OkStatus();
}

absl::Status PixelCacheWriter::Append(const uint8_t* data, int64_t bytes) {
  return Write(data, bytes);
}

absl::Status PixelCacheWriter::Finish(const Shape& shape, const std::vector<int>& labels,
                                      int64_t skipped,
                                      const std::vector<std::string>& skipped_names) {
  RETURN_IF_ERROR(Write(labels.data(), static_cast<int64_t>(labels.size()) * 4));
  const std::string names = absl::StrJoin(skipped_names, "\n");
  RETURN_IF_ERROR(Write(names.data(), static_cast<int64_t>(names.size())));
  int64_t v[7] = {shape[0], shape[1], shape[2], shape[3], skipped,
                  static_cast<int64_t>(names.size()), 0};
  v[6] = written_ + kFooterBytes;
  uint8_t footer[kFooterBytes] = {};
  std::memcpy(footer, v, sizeof(v));
  std::memcpy(footer + 56, kMagic, 8);
  RETURN_IF_ERROR(Write(footer, kFooterBytes));
  const int fd = fd_;
  fd_ = -1;
  if (close(fd) != 0 || std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const std::string error = std::strerror(errno);
    unlink(temp_path_.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot finish cache file '", path_, "': ", error));
  }
  return absl::OkStatus();
}

}  // namespace bitsweep::engine::data
