#include "worker/engine/data/image_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "worker/engine/data/resample.h"

namespace bitsweep::engine::data {
namespace {

constexpr size_t kMaxSkippedNames = 20;

absl::StatusOr<std::string> ReadImageFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string message = absl::StrCat("image '", path, "': cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  std::string bytes;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_size > 0) bytes.reserve(static_cast<size_t>(st.st_size));
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string error = std::strerror(errno);
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat("image '", path, "': read error: ", error));
    }
    if (n == 0) break;
    bytes.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return bytes;
}

// Pixel sets alive in this process, by content key: a second dataset over the same files and
// geometry (another normalization, another trial) shares them.
absl::Mutex memory_mu;
std::map<std::string, std::weak_ptr<const LoadedPixels>>& MemoryCache() {
  static auto* cache = new std::map<std::string, std::weak_ptr<const LoadedPixels>>();
  return *cache;
}

struct Decoded {
  bool ready = false;
  absl::Status status;
  std::vector<uint8_t> chw;
  int64_t height = 0, width = 0;
};

}  // namespace

size_t PixelSetsInMemoryForTest() {
  absl::MutexLock lock(&memory_mu);
  return MemoryCache().size();
}

absl::StatusOr<Image> FileImageSource::Load(int64_t i, int channels) const {
  const std::string& path = entries_[static_cast<size_t>(i)].path;
  ASSIGN_OR_RETURN(std::string bytes, ReadImageFile(path));
  return DecodeImage(bytes, path, channels);
}

std::vector<uint8_t> PreprocessImage(Image image, const PipelineSpec& spec, int64_t* height,
                                     int64_t* width) {
  if (spec.resize > 0) image = ResizeShorterSide(image, spec.resize);
  if (spec.crop > 0) image = CenterCrop(image, spec.crop, spec.crop);
  const int64_t plane = image.height * image.width;
  const int c = image.channels;
  std::vector<uint8_t> chw(static_cast<size_t>(plane * c));
  for (int ch = 0; ch < c; ++ch) {
    const int from = spec.bgr && c == 3 ? 2 - ch : ch;
    uint8_t* dst = chw.data() + ch * plane;
    const uint8_t* src = image.pixels.data() + from;
    for (int64_t i = 0; i < plane; ++i) dst[i] = src[i * c];
  }
  *height = image.height;
  *width = image.width;
  return chw;
}

absl::StatusOr<std::shared_ptr<const LoadedPixels>> LoadPixels(
    const ImageSource& source, const std::vector<int>& labels, const PipelineSpec& spec,
    const LoaderOptions& options, const std::string& key, int64_t* decoded) {
  if (decoded != nullptr) *decoded = 0;
  if (spec.channels != 1 && spec.channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("images can be read as 1 or 3 channels, not ", spec.channels));
  }
  if (!key.empty()) {
    absl::MutexLock lock(&memory_mu);
    auto it = MemoryCache().find(key);
    if (it != MemoryCache().end()) {
      if (std::shared_ptr<const LoadedPixels> alive = it->second.lock()) return alive;
      MemoryCache().erase(it);
    }
  }
  auto remember = [&key](std::shared_ptr<const LoadedPixels> pixels) {
    if (!key.empty()) {
      absl::MutexLock lock(&memory_mu);
      // Entries of sets nobody holds any more go too, so that a long-lived worker that sees many
      // datasets keeps no trace of the ones it finished with.
      std::erase_if(MemoryCache(), [](const auto& entry) { return entry.second.expired(); });
      MemoryCache()[key] = pixels;
    }
    return pixels;
  };

  if (!options.cache_path.empty()) {
    ASSIGN_OR_RETURN(std::optional<CachedPixels> cached,
                     ReadPixelCache(options.cache_path, options.max_resident_bytes));
    if (cached.has_value()) {
      auto loaded = std::make_shared<LoadedPixels>();
      loaded->shape = std::move(cached->shape);
      loaded->labels = std::move(cached->labels);
      loaded->skipped = cached->skipped;
      loaded->skipped_names = std::move(cached->skipped_names);
      loaded->store = std::move(cached->store);
      return remember(std::move(loaded));
    }
  }

  const int64_t n = source.size();
  if (static_cast<int64_t>(labels.size()) != n) {
    return absl::InternalError("LoadPixels: one label per image expected");
  }
  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int64_t window = std::max<int64_t>(8, int64_t{4} * threads);  // prefetch depth

  // Workers claim indices in order, at most `window` ahead of the writer (this thread).
  struct Pool {
    absl::Mutex mu;
    std::vector<Decoded> ring ABSL_GUARDED_BY(mu);
    int64_t next ABSL_GUARDED_BY(mu) = 0;
    int64_t consumed ABSL_GUARDED_BY(mu) = 0;
    bool stop ABSL_GUARDED_BY(mu) = false;
    int64_t n = 0, window = 0;
    bool CanClaim() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return stop || next >= n || next < consumed + window;
    }
  } pool;
  pool.n = n;
  pool.window = window;
  {
    absl::MutexLock lock(&pool.mu);
    pool.ring.resize(static_cast<size_t>(window));
  }
  auto work = [&] {
    while (true) {
      int64_t i;
      {
        absl::MutexLock lock(&pool.mu);
        pool.mu.Await(absl::Condition(&pool, &Pool::CanClaim));
        if (pool.stop || pool.next >= n) return;
        i = pool.next++;
      }
      Decoded d;
      absl::StatusOr<Image> image = source.Load(i, spec.channels);
      if (image.ok()) {
        d.chw = PreprocessImage(*std::move(image), spec, &d.height, &d.width);
      } else {
        d.status = image.status();
      }
      d.ready = true;
      absl::MutexLock lock(&pool.mu);
      pool.ring[static_cast<size_t>(i % window)] = std::move(d);
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back(work);
  auto finish_workers = [&] {
    {
      absl::MutexLock lock(&pool.mu);
      pool.stop = true;
    }
    for (std::thread& t : workers) t.join();
    workers.clear();
  };

  auto loaded = std::make_shared<LoadedPixels>();
  int64_t channels = spec.channels, height = 0, width = 0, sample = 0;
  bool resident = true;
  std::vector<uint8_t> pixels;
  PixelCacheWriter writer;
  bool writing = false;
  absl::Status status;
  int64_t kept = 0;
  for (int64_t i = 0; i < n && status.ok(); ++i) {
    Decoded d;
    {
      absl::MutexLock lock(&pool.mu);
      Decoded* slot = &pool.ring[static_cast<size_t>(i % window)];
      pool.mu.Await(absl::Condition(&slot->ready));
      d = std::move(*slot);
      *slot = Decoded();
      pool.consumed = i + 1;
    }
    if (!d.status.ok()) {
      if (!spec.skip_bad) {
        status = d.status;
        break;
      }
      ++loaded->skipped;
      if (loaded->skipped_names.size() < kMaxSkippedNames) {
        loaded->skipped_names.push_back(source.name(i));
      }
      continue;
    }
    if (sample == 0) {
      // The first kept image fixes the sample shape and where the set lives.
      height = d.height;
      width = d.width;
      sample = channels * height * width;
      resident = n * sample <= options.max_resident_bytes;
      if (!resident && options.cache_path.empty()) {
        status = absl::ResourceExhaustedError(absl::StrCat(
            n, " images of ", channels, "x", height, "x", width, " take ", n * sample,
            " bytes, more than the ", options.max_resident_bytes,
            " bytes held in memory, and there is no cache folder to stream them from"));
        break;
      }
      if (resident) pixels.resize(static_cast<size_t>(n * sample));
      if (!options.cache_path.empty()) {
        absl::Status opened = writer.Open(options.cache_path);
        if (opened.ok()) {
          writing = true;
        } else if (!resident) {
          status = opened;
          break;
        } else {
          std::fprintf(stderr, "warning: not caching decoded images: %s\n",
                       std::string(opened.message()).c_str());
        }
      }
    } else if (d.height != height || d.width != width) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "image '", source.name(i), "' is ", d.width, "x", d.height, " after preprocessing but ",
          "the images before it are ", width, "x", height,
          "; give --resize N and --center-crop N to bring every image to one size"));
      break;
    }
    if (resident) std::memcpy(pixels.data() + kept * sample, d.chw.data(), d.chw.size());
    if (writing) {
      absl::Status appended = writer.Append(d.chw.data(), sample);
      if (!appended.ok()) {
        if (!resident) {
          status = appended;
          break;
        }
        std::fprintf(stderr, "warning: not caching decoded images: %s\n",
                     std::string(appended.message()).c_str());
        writing = false;
      }
    }
    loaded->labels.push_back(labels[static_cast<size_t>(i)]);
    ++kept;
  }
  finish_workers();
  RETURN_IF_ERROR(status);
  if (kept == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no image could be read (", loaded->skipped, " bad, e.g. '",
        loaded->skipped_names.empty() ? "" : loaded->skipped_names[0], "')"));
  }
  loaded->shape = {kept, channels, height, width};
  if (writing) {
    absl::Status finished =
        writer.Finish(loaded->shape, loaded->labels, loaded->skipped, loaded->skipped_names);
    if (!finished.ok()) {
      if (!resident) return finished;
      std::fprintf(stderr, "warning: not caching decoded images: %s\n",
                   std::string(finished.message()).c_str());
    }
  }
  if (resident) {
    pixels.resize(static_cast<size_t>(kept * sample));
    loaded->store = PixelStore::Resident(kept, sample, std::move(pixels));
  } else {
    ASSIGN_OR_RETURN(loaded->store, PixelStore::Streamed(options.cache_path,
                                                         kPixelCacheDataOffset, kept, sample));
  }
  if (decoded != nullptr) *decoded = n;
  return remember(std::move(loaded));
}

}  // namespace bitsweep::engine::data
