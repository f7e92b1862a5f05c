#include "worker/engine/dataset.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "worker/engine/data/image_decode.h"
#include "worker/engine/data/image_list.h"
#include "worker/engine/data/image_loader.h"
#include "worker/engine/data/pixel_store.h"

namespace bitsweep::engine {
namespace {

constexpr absl::string_view kSupportedSchemes =
    "supported: 'idx:PREFIX' (PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]), "
    "'npy:IMAGES.npy,LABELS.npy', 'imagefolder:DIR' (DIR/CLASS/IMAGE) and 'list:FILE.csv' "
    "(path,label lines)";

// Upper bound on the number of elements a header may announce; beyond this a header is treated
// as corrupt rather than as a request to allocate terabytes.
constexpr uint64_t kMaxElements = uint64_t{1} << 38;

// ---------------------------------------------------------------------------------------------
// Input files. zlib's gz* functions read both gzip-compressed and plain files (the latter
// transparently), so one reader serves IDX (raw or .gz) and .npy files.

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};

class InputFile {
 public:
  static absl::StatusOr<InputFile> Open(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      return absl::NotFoundError(absl::StrCat("file '", path, "' not found"));
    }
    if (std::filesystem::is_directory(path, ec)) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "' is a directory, not a file"));
    }
    errno = 0;
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) {
      int err = errno;
      return absl::InvalidArgumentError(absl::StrCat("cannot open file '", path,
                                                     "': ", err ? std::strerror(err) : "gzopen failed"));
    }
    gzbuffer(f, 1 << 18);
    InputFile file;
    file.path_ = path;
    file.file_.reset(f);
    return file;
  }

  const std::string& path() const { return path_; }

  // Reads up to `n` bytes into `dst`; returns how many were read (fewer only at end of data).
  absl::StatusOr<uint64_t> Read(void* dst, uint64_t n) {
    char* out = static_cast<char*>(dst);
    uint64_t done = 0;
    while (done < n) {
      unsigned chunk = static_cast<unsigned>(std::min<uint64_t>(n - done, uint64_t{1} << 30));
      int got = gzread(file_.get(), out + done, chunk);
      if (got < 0) {
        int errnum = 0;
        const char* msg = gzerror(file_.get(), &errnum);
        std::string detail = errnum == Z_ERRNO ? std::strerror(errno) : (msg ? msg : "");
        return absl::InvalidArgumentError(
            absl::StrCat("file '", path_, "': read error: ", detail));
      }
      done += static_cast<uint64_t>(got);
      if (static_cast<unsigned>(got) < chunk) break;
    }
    return done;
  }

  // Reads exactly `n` bytes of `what` (e.g. "header"), or fails naming the shortfall.
  absl::Status ReadExact(void* dst, uint64_t n, absl::string_view what) {
    ASSIGN_OR_RETURN(uint64_t got, Read(dst, n));
    if (got != n) return Truncated(what, n, got);
    return absl::OkStatus();
  }

  // Reads `count` elements of T into `out` (resized to `count`), growing the buffer as data
  // arrives so that a corrupt header announcing huge sizes fails on truncation, not allocation.
  template <typename T>
  absl::Status ReadArray(uint64_t count, std::vector<T>& out, absl::string_view what) {
    const uint64_t total_bytes = count * sizeof(T);
    constexpr uint64_t kInitialBytes = uint64_t{64} << 20;
    out.clear();
    uint64_t done = 0;
    while (done < total_bytes) {
      uint64_t capacity_bytes = out.size() * sizeof(T);
      if (capacity_bytes == done) {
        uint64_t grow = std::max<uint64_t>(done, kInitialBytes);
        uint64_t new_bytes = std::min(total_bytes, done + grow);
        out.resize(static_cast<size_t>((new_bytes + sizeof(T) - 1) / sizeof(T)));
        capacity_bytes = out.size() * sizeof(T);
      }
      uint64_t want = std::min(total_bytes, capacity_bytes) - done;
      ASSIGN_OR_RETURN(uint64_t got, Read(reinterpret_cast<char*>(out.data()) + done, want));
      done += got;
      if (got < want) return Truncated(what, total_bytes, done);
    }
    out.resize(static_cast<size_t>(count));
    return absl::OkStatus();
  }

 private:
  absl::Status Truncated(absl::string_view what, uint64_t expected, uint64_t got) {
    int errnum = 0;
    gzerror(file_.get(), &errnum);
    const char* note = errnum == Z_BUF_ERROR ? " (the gzip stream ends early)" : "";
    return absl::InvalidArgumentError(absl::StrCat("file '", path_, "' is truncated: expected ",
                                                   expected, " bytes of ", what, ", got ", got,
                                                   note));
  }

  std::string path_;
  std::unique_ptr<gzFile_s, GzCloser> file_;
};

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Multiplies dims, failing (returning false) beyond kMaxElements.
bool CheckedProduct(const std::vector<uint64_t>& dims, uint64_t& product) {
  product = 1;
  for (uint64_t d : dims) {
    if (d != 0 && product > kMaxElements / d) return false;
    product *= d;
  }
  return product <= kMaxElements;
}

// ---------------------------------------------------------------------------------------------
// Preprocessing.

int64_t NumChannels(const Shape& images_shape) {
  return images_shape.size() == 4 ? images_shape[1] : 1;
}

absl::Status CheckPreprocessingValues(const Preprocessing& pre) {
  if (pre.limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocessing limit must be >= 0 (0: all samples), got ", pre.limit));
  }
  if (pre.resize < 0 || pre.center_crop < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "preprocessing resize and center crop must be >= 0 (0: none), got ", pre.resize, " and ",
        pre.center_crop));
  }
  if (pre.channels != 0 && pre.channels != 1 && pre.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "images can be read as 1 (grayscale) or 3 (RGB) channels, not ", pre.channels));
  }
  for (float m : pre.mean) {
    if (!std::isfinite(m)) {
      return absl::InvalidArgumentError(absl::StrCat("preprocessing mean value ", m,
                                                     " is not finite"));
    }
  }
  for (float s : pre.std) {
    if (!(s > 0.0f) || !std::isfinite(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocessing std value ", s, " must be finite and > 0"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPreprocessingChannels(const Preprocessing& pre, const Shape& images_shape) {
  const int64_t channels = NumChannels(images_shape);
  for (const auto& [name, values] : {std::pair<absl::string_view, const std::vector<float>*>{
                                         "mean", &pre.mean},
                                     {"std", &pre.std}}) {
    const int64_t n = static_cast<int64_t>(values->size());
    if (n != 0 && n != 1 && n != channels) {
      return absl::InvalidArgumentError(absl::StrCat(
          "preprocessing has ", n, " ", name, " values but the images ", ShapeToString(images_shape),
          " have ", channels, " channel", channels == 1 ? " (give 1 value)" : "s",
          channels == 1 ? "" : absl::StrCat(" (give 1 or ", channels, " values)")));
    }
  }
  return absl::OkStatus();
}

void ApplyPreprocessing(const Preprocessing& pre, Tensor& images) {
  if (pre.mean.empty() && pre.std.empty()) return;
  const Shape& shape = images.shape();
  const int64_t n = shape.empty() ? 0 : shape[0];
  const int64_t channels = NumChannels(shape);
  const int64_t per_sample = n == 0 ? 0 : images.num_elements() / n;
  const int64_t plane = channels == 0 ? 0 : per_sample / channels;
  auto value = [](const std::vector<float>& v, int64_t c, float dflt) {
    if (v.empty()) return dflt;
    return v.size() == 1 ? v[0] : v[static_cast<size_t>(c)];
  };
  float* data = images.floats().data();
  for (int64_t c = 0; c < channels; ++c) {
    const float m = value(pre.mean, c, 0.0f);
    const float s = value(pre.std, c, 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      float* p = data + i * per_sample + c * plane;
      for (int64_t j = 0; j < plane; ++j) p[j] = (p[j] - m) / s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// IDX.

absl::StatusOr<InputFile> OpenRawOrGz(const std::string& path, absl::string_view what) {
  std::error_code ec;
  const std::string gz = path + ".gz";
  if (std::filesystem::exists(path, ec)) return InputFile::Open(path);
  if (std::filesystem::exists(gz, ec)) return InputFile::Open(gz);
  return absl::NotFoundError(
      absl::StrCat(what, " file not found (tried '", path, "' and '", gz, "')"));
}

absl::Status LoadIdx(const std::string& prefix, const Preprocessing& pre, Dataset& ds) {
  if (prefix.empty()) {
    return absl::InvalidArgumentError("'idx:' needs a path prefix, e.g. idx:/data/t10k");
  }
  ASSIGN_OR_RETURN(InputFile images, OpenRawOrGz(prefix + "-images-idx3-ubyte", "images"));
  ASSIGN_OR_RETURN(InputFile labels, OpenRawOrGz(prefix + "-labels-idx1-ubyte", "labels"));

  unsigned char ih[16];
  RETURN_IF_ERROR(images.ReadExact(ih, sizeof(ih), "IDX image header"));
  const uint32_t imagic = BigEndian32(ih);
  if (imagic != 0x00000803) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "file '%s': wrong magic 0x%08x (expected 0x00000803, an IDX file of 3-D uint8 images)",
        images.path(), imagic));
  }
  const uint64_t n = BigEndian32(ih + 4), h = BigEndian32(ih + 8), w = BigEndian32(ih + 12);
  uint64_t total = 0;
  if (n == 0 || h == 0 || w == 0 || !CheckedProduct({n, h, w}, total)) {
    return absl::InvalidArgumentError(
        absl::StrCat("file '", images.path(), "': implausible IDX header: ", n, " images of ", h,
                     "x", w, " pixels"));
  }

  unsigned char lh[8];
  RETURN_IF_ERROR(labels.ReadExact(lh, sizeof(lh), "IDX label header"));
  const uint32_t lmagic = BigEndian32(lh);
  if (lmagic != 0x00000801) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "file '%s': wrong magic 0x%08x (expected 0x00000801, an IDX file of uint8 labels)",
        labels.path(), lmagic));
  }
  const uint64_t nl = BigEndian32(lh + 4);
  if (nl != n) {
    return absl::InvalidArgumentError(absl::StrCat("image/label count mismatch: '", images.path(),
                                                   "' has ", n, " images but '", labels.path(),
                                                   "' has ", nl, " labels"));
  }

  const uint64_t keep = pre.limit > 0 && !pre.stratified
                            ? std::min<uint64_t>(n, static_cast<uint64_t>(pre.limit))
                            : n;
  const Shape shape = {static_cast<int64_t>(keep), 1, static_cast<int64_t>(h),
                       static_cast<int64_t>(w)};
  RETURN_IF_ERROR(CheckPreprocessingChannels(pre, shape));

  std::vector<uint8_t> label_bytes;
  RETURN_IF_ERROR(labels.ReadArray(keep, label_bytes, "label data after the 8-byte header"));
  std::vector<uint8_t> pixels;
  RETURN_IF_ERROR(
      images.ReadArray(keep * h * w, pixels, "pixel data after the 16-byte header"));

  std::array<float, 256> scale;
  for (int i = 0; i < 256; ++i) scale[i] = static_cast<float>(i) / 255.0f;
  std::vector<float> values(pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) values[i] = scale[pixels[i]];
  pixels = {};
  ds.images = Tensor::Float(shape, std::move(values));
  ds.labels.assign(label_bytes.begin(), label_bytes.end());
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// .npy

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<uint64_t> shape;
};

// Parses the Python dict literal of a .npy header, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 28, 28), }
class NpyHeaderParser {
 public:
  explicit NpyHeaderParser(absl::string_view text) : s_(text) {}

  absl::StatusOr<NpyHeader> Parse() {
    NpyHeader header;
    bool has_descr = false, has_fortran = false, has_shape = false;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      if (!Consume(':')) return Error("expected ':'");
      SkipSpace();
      if (key == "descr") {
        if (Peek() == '\'' || Peek() == '"') {
          ASSIGN_OR_RETURN(header.descr, ParseString());
        } else {
          ASSIGN_OR_RETURN(header.descr, SkipValue());  // structured dtype: reported as such
        }
        has_descr = true;
      } else if (key == "fortran_order") {
        if (ConsumeWord("True")) {
          header.fortran_order = true;
        } else if (ConsumeWord("False")) {
          header.fortran_order = false;
        } else {
          return Error("'fortran_order' is neither True nor False");
        }
        has_fortran = true;
      } else if (key == "shape") {
        ASSIGN_OR_RETURN(header.shape, ParseTuple());
        has_shape = true;
      } else {
        RETURN_IF_ERROR(SkipValue().status());
      }
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume('}')) break;
      return Error("expected ',' or '}'");
    }
    if (!has_descr) return Error("no 'descr' key");
    if (!has_fortran) return Error("no 'fortran_order' key");
    if (!has_shape) return Error("no 'shape' key");
    return header;
  }

 private:
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void SkipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' ||
                              s_[i_] == '\r')) {
      ++i_;
    }
  }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++i_;
    return true;
  }
  bool ConsumeWord(absl::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("bad .npy header (", what, " at offset ", i_, "): ", s_));
  }
  absl::StatusOr<std::string> ParseString() {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    ++i_;
    const size_t end = s_.find(quote, i_);
    if (end == absl::string_view::npos) return Error("unterminated string");
    std::string out(s_.substr(i_, end - i_));
    i_ = end + 1;
    return out;
  }
  absl::StatusOr<std::vector<uint64_t>> ParseTuple() {
    if (!Consume('(')) return Error("'shape' is not a tuple");
    std::vector<uint64_t> dims;
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      if (Peek() < '0' || Peek() > '9') return Error("'shape' holds a non-integer");
      uint64_t v = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        if (v > (kMaxElements * 10)) return Error("'shape' dimension too large");
        v = v * 10 + static_cast<uint64_t>(Peek() - '0');
        ++i_;
      }
      Consume('L');  // Python 2 longs
      dims.push_back(v);
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume(')')) break;
      return Error("expected ',' or ')' in 'shape'");
    }
    return dims;
  }
  // Skips a value (string, word, or bracketed group) and returns its text.
  absl::StatusOr<std::string> SkipValue() {
    const size_t start = i_;
    int depth = 0;
    while (i_ < s_.size()) {
      const char c = s_[i_];
      if (c == '\'' || c == '"') {
        RETURN_IF_ERROR(ParseString().status());
        continue;
      }
      if (c == '(' || c == '[' || c == '{') ++depth;
      if (c == ')' || c == ']' || c == '}') {
        if (depth == 0) break;
        --depth;
      }
      if (c == ',' && depth == 0) break;
      ++i_;
    }
    if (depth != 0) return Error("unbalanced brackets");
    return std::string(s_.substr(start, i_ - start));
  }

  absl::string_view s_;
  size_t i_ = 0;
};

absl::StatusOr<NpyHeader> ReadNpyHeader(InputFile& file) {
  unsigned char pre[8];
  RETURN_IF_ERROR(file.ReadExact(pre, sizeof(pre), ".npy preamble"));
  if (std::memcmp(pre, "\x93NUMPY", 6) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("file '", file.path(), "' is not a .npy file (bad magic; expected \\x93NUMPY)"));
  }
  const int major = pre[6], minor = pre[7];
  uint64_t header_len = 0;
  if (major == 1) {
    unsigned char len[2];
    RETURN_IF_ERROR(file.ReadExact(len, sizeof(len), ".npy header length"));
    header_len = uint64_t{len[0]} | (uint64_t{len[1]} << 8);
  } else if (major == 2 || major == 3) {
    unsigned char len[4];
    RETURN_IF_ERROR(file.ReadExact(len, sizeof(len), ".npy header length"));
    header_len = uint64_t{len[0]} | (uint64_t{len[1]} << 8) | (uint64_t{len[2]} << 16) |
                 (uint64_t{len[3]} << 24);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("file '", file.path(),
                                                   "': unsupported .npy format version ", major,
                                                   ".", minor, " (supported: 1.0, 2.0, 3.0)"));
  }
  if (header_len > (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("file '", file.path(), "': implausible .npy header length ", header_len));
  }
  std::string text(static_cast<size_t>(header_len), '\0');
  RETURN_IF_ERROR(file.ReadExact(text.data(), header_len, ".npy header"));
  absl::StatusOr<NpyHeader> header = NpyHeaderParser(text).Parse();
  if (!header.ok()) return Annotate(header.status(), absl::StrCat("file '", file.path(), "'"));
  return header;
}

std::string ShapeString(const std::vector<uint64_t>& dims) {
  return absl::StrCat("(", absl::StrJoin(dims, ","), ")");
}

template <typename T>
T LoadLittleEndian(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    auto* b = reinterpret_cast<unsigned char*>(&v);
    std::reverse(b, b + sizeof(T));
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Image datasets: a content key, then data/image_loader.h.

// Size and modification time: a file rewritten in place gets a new cache key.
std::string FileStamp(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::StrCat(path, " missing");
  return absl::StrCat(path, " ", st.st_size, " ", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
}

data::PipelineSpec PipelineFor(const Preprocessing& pre) {
  data::PipelineSpec spec;
  spec.channels = pre.channels == 0 ? 3 : pre.channels;
  spec.resize = pre.resize;
  spec.crop = pre.center_crop;
  spec.bgr = pre.bgr;
  spec.skip_bad = pre.skip_bad_images;
  return spec;
}

// Runs `source` through the pipeline (or finds it cached) and makes `ds` an image dataset.
// `content` identifies the source's bytes and the kept samples.
absl::Status LoadImages(const data::ImageSource& source, const std::vector<int>& labels,
                        const std::string& content, const Preprocessing& pre,
                        const LoadOptions& options, Dataset& ds) {
  const data::PipelineSpec spec = PipelineFor(pre);
  const std::string key = Sha256Hex(absl::StrCat(
      "bitsweep pixels v1\n", content, "\nchannels=", spec.channels, " resize=", spec.resize,
      " crop=", spec.crop, " bgr=", spec.bgr, " skip_bad=", spec.skip_bad));
  data::LoaderOptions loader;
  loader.threads = options.threads;
  loader.max_resident_bytes = options.max_resident_bytes;
  if (!options.cache_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.cache_dir, ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot create the dataset cache folder '", options.cache_dir, "': ", ec.message()));
    }
    loader.cache_path = absl::StrCat(options.cache_dir, "/", key, ".pixels");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const data::LoadedPixels> pixels,
                   data::LoadPixels(source, labels, spec, loader, key, &ds.decoded_images));
  RETURN_IF_ERROR(CheckPreprocessingChannels(pre, pixels->shape));
  // Aliased: the dataset keeps the whole load alive, so the in-process cache finds it.
  ds.pixels = std::shared_ptr<const data::PixelStore>(pixels, pixels->store.get());
  ds.pixel_shape = pixels->shape;
  ds.labels = pixels->labels;
  ds.skipped_images = pixels->skipped;
  ds.skipped_names = pixels->skipped_names;
  const int64_t channels = pixels->shape[1];
  auto per_channel = [channels](const std::vector<float>& v, float dflt) {
    std::vector<float> out(static_cast<size_t>(channels), dflt);
    for (int64_t c = 0; c < channels && !v.empty(); ++c) {
      out[static_cast<size_t>(c)] = v.size() == 1 ? v[0] : v[static_cast<size_t>(c)];
    }
    return out;
  };
  ds.pixel_mean = per_channel(pre.mean, 0.0f);
  ds.pixel_std = per_channel(pre.std, 1.0f);
  return absl::OkStatus();
}

// Hashes the indices kept from a source, for the content key.
std::string IndicesKey(const std::vector<int64_t>& keep) {
  Sha256 sha;
  sha.Update(keep.data(), keep.size() * sizeof(int64_t));
  return absl::StrCat(keep.size(), " samples ", sha.HexDigest());
}

// uint8 .npy images, held in memory, as an ImageSource over the kept samples.
class NpyImageSource : public data::ImageSource {
 public:
  NpyImageSource(std::string path, std::vector<uint8_t> pixels, int64_t h, int64_t w, int64_t c,
                 bool channels_last, std::vector<int64_t> keep)
      : path_(std::move(path)), pixels_(std::move(pixels)), h_(h), w_(w), c_(c),
        channels_last_(channels_last), keep_(std::move(keep)) {}
  int64_t size() const override { return static_cast<int64_t>(keep_.size()); }
  std::string name(int64_t i) const override {
    return absl::StrCat(path_, " [", keep_[static_cast<size_t>(i)], "]");
  }
  absl::StatusOr<data::Image> Load(int64_t i, int channels) const override {
    data::Image image;
    image.height = h_;
    image.width = w_;
    image.channels = static_cast<int>(c_);
    image.pixels.resize(static_cast<size_t>(h_ * w_ * c_));
    const uint8_t* src = pixels_.data() + keep_[static_cast<size_t>(i)] * h_ * w_ * c_;
    if (channels_last_) {
      std::memcpy(image.pixels.data(), src, image.pixels.size());
    } else {
      for (int64_t ch = 0; ch < c_; ++ch) {
        for (int64_t p = 0; p < h_ * w_; ++p) image.pixels[p * c_ + ch] = src[ch * h_ * w_ + p];
      }
    }
    absl::StatusOr<data::Image> converted = data::ConvertChannels(std::move(image), channels);
    if (!converted.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(name(i), ": ", converted.status().message()));
    }
    return converted;
  }

 private:
  std::string path_;
  std::vector<uint8_t> pixels_;
  int64_t h_, w_, c_;
  bool channels_last_;
  std::vector<int64_t> keep_;
};

absl::Status LoadNpyImages(const std::string& images_path, const std::string& labels_path,
                           const std::vector<uint64_t>& dims, std::vector<uint8_t> pixels,
                           const std::vector<int>& labels, const Preprocessing& pre,
                           const LoadOptions& options, Dataset& ds) {
  auto channel_like = [](uint64_t d) { return d == 1 || d == 3 || d == 4; };
  int64_t h, w, c;
  bool channels_last;
  if (dims.size() == 3) {
    h = static_cast<int64_t>(dims[1]), w = static_cast<int64_t>(dims[2]), c = 1;
    channels_last = true;
  } else if (channel_like(dims[3]) && !channel_like(dims[1])) {
    h = static_cast<int64_t>(dims[1]), w = static_cast<int64_t>(dims[2]);
    c = static_cast<int64_t>(dims[3]);
    channels_last = true;
  } else if (channel_like(dims[1])) {
    c = static_cast<int64_t>(dims[1]), h = static_cast<int64_t>(dims[2]);
    w = static_cast<int64_t>(dims[3]);
    channels_last = false;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "file '", images_path, "': uint8 images of shape ", ShapeString(dims),
        " have no channel dimension of 1, 3 or 4 (expected NHWC or NCHW)"));
  }
  std::vector<int64_t> keep = data::SelectSubset(labels, pre.limit, pre.stratified);
  std::vector<int> kept_labels;
  for (int64_t i : keep) kept_labels.push_back(labels[static_cast<size_t>(i)]);
  const std::string content =
      absl::StrCat("npy ", FileStamp(images_path), "\n", FileStamp(labels_path), "\n",
                   channels_last ? "NHWC" : "NCHW", "\n", IndicesKey(keep));
  NpyImageSource source(images_path, std::move(pixels), h, w, c, channels_last, std::move(keep));
  return LoadImages(source, kept_labels, content, pre, options, ds);
}

// imagefolder:DIR and list:FILE.csv.
absl::Status LoadImageFiles(const std::string& location, bool folder, const Preprocessing& pre,
                            const LoadOptions& options, Dataset& ds) {
  if (location.empty()) {
    return absl::InvalidArgumentError(folder ? "'imagefolder:' needs a folder: imagefolder:DIR"
                                             : "'list:' needs a file: list:FILE.csv");
  }
  ASSIGN_OR_RETURN(data::ImageList list,
                   folder ? data::ListImageFolder(location) : data::ListCsv(location));
  std::vector<int> labels;
  labels.reserve(list.entries.size());
  for (const data::ImageEntry& e : list.entries) labels.push_back(e.label);
  const std::vector<int64_t> keep = data::SelectSubset(labels, pre.limit, pre.stratified);
  std::vector<data::ImageEntry> entries;
  std::vector<int> kept_labels;
  std::string content = absl::StrCat(folder ? "imagefolder " : "list ",
                                     std::filesystem::absolute(location).string(), "\n");
  for (int64_t i : keep) {
    const data::ImageEntry& e = list.entries[static_cast<size_t>(i)];
    absl::StrAppend(&content, e.label, " ", FileStamp(e.path), "\n");
    entries.push_back(e);
    kept_labels.push_back(e.label);
  }
  data::FileImageSource source(std::move(entries));
  return LoadImages(source, kept_labels, content, pre, options, ds);
}

// Keeps samples `keep` of a float dataset.
void GatherFloat(const std::vector<int64_t>& keep, Dataset& ds) {
  const int64_t sample = NumElements(ds.sample_shape());
  Shape shape = ds.images.shape();
  shape[0] = static_cast<int64_t>(keep.size());
  std::vector<float> values(static_cast<size_t>(shape[0] * sample));
  std::vector<int> labels;
  const float* src = ds.images.floats().data();
  for (size_t i = 0; i < keep.size(); ++i) {
    std::memcpy(values.data() + i * sample, src + keep[i] * sample, sample * sizeof(float));
    labels.push_back(ds.labels[static_cast<size_t>(keep[i])]);
  }
  ds.images = Tensor::Float(std::move(shape), std::move(values));
  ds.labels = std::move(labels);
}

absl::Status LoadNpy(const std::string& spec, const Preprocessing& pre, const LoadOptions& options,
                     Dataset& ds) {
  // Split "IMAGES.npy,LABELS.npy"; a path containing commas is split after ".npy,".
  std::string images_path, labels_path;
  std::vector<std::string> parts = absl::StrSplit(spec, ',');
  if (parts.size() == 2) {
    images_path = parts[0];
    labels_path = parts[1];
  } else if (size_t pos = spec.find(".npy,");
             pos != std::string::npos && spec.find(".npy,", pos + 1) == std::string::npos) {
    images_path = spec.substr(0, pos + 4);
    labels_path = spec.substr(pos + 5);
  }
  if (images_path.empty() || labels_path.empty()) {
    return absl::InvalidArgumentError(
        "'npy:' needs two comma-separated files: npy:IMAGES.npy,LABELS.npy");
  }

  ASSIGN_OR_RETURN(InputFile images, InputFile::Open(images_path));
  ASSIGN_OR_RETURN(InputFile labels, InputFile::Open(labels_path));
  ASSIGN_OR_RETURN(NpyHeader ih, ReadNpyHeader(images));
  ASSIGN_OR_RETURN(NpyHeader lh, ReadNpyHeader(labels));

  // Images: '<f4' (rank 2..4) or '|u1' (uint8 images, rank 3 or 4), C order.
  const bool uint8_images = ih.descr == "|u1" || ih.descr == "<u1";
  if (ih.descr != "<f4" && !uint8_images) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file '", images.path(), "': unsupported image dtype '", ih.descr,
        "' (expected '<f4', little-endian float32, or '|u1', uint8 images)"));
  }
  if (uint8_images && ih.shape.size() != 3 && ih.shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file '", images.path(), "': uint8 images have shape ", ShapeString(ih.shape),
        "; expected (N,H,W), (N,H,W,C) or (N,C,H,W)"));
  }
  if (ih.fortran_order) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file '", images.path(),
        "': fortran_order is True; only C-order arrays are supported (save "
        "np.ascontiguousarray(x))"));
  }
  if (ih.shape.size() < 2 || ih.shape.size() > 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file '", images.path(), "': images have shape ", ShapeString(ih.shape),
        "; expected rank 2 (N,D), 3 (N,H,W) or 4 (N,C,H,W)"));
  }
  uint64_t total = 0;
  if (std::count(ih.shape.begin(), ih.shape.end(), 0) > 0 || !CheckedProduct(ih.shape, total)) {
    return absl::InvalidArgumentError(absl::StrCat("file '", images.path(),
                                                   "': implausible image shape ",
                                                   ShapeString(ih.shape)));
  }

  // Labels: integer, rank 1, length N.
  int label_size = 0;
  if (lh.descr == "<i8") {
    label_size = 8;
  } else if (lh.descr == "<i4") {
    label_size = 4;
  } else if (lh.descr == "|u1" || lh.descr == "<u1") {
    label_size = 1;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "file '", labels.path(), "': unsupported label dtype '", lh.descr,
        "' (expected '<i8', '<i4' or '|u1')"));
  }
  if (lh.shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("file '", labels.path(),
                                                   "': labels have shape ", ShapeString(lh.shape),
                                                   "; expected a vector (N,)"));
  }
  // A 1-D array is laid out identically in C and Fortran order, so fortran_order is ignored here.
  const uint64_t n = ih.shape[0];
  if (lh.shape[0] != n) {
    return absl::InvalidArgumentError(absl::StrCat("image/label count mismatch: '", images.path(),
                                                   "' has ", n, " images but '", labels.path(),
                                                   "' has ", lh.shape[0], " labels"));
  }

  // Stratified subsets and uint8 images need every label; the first `limit` samples do not.
  const uint64_t keep = pre.limit > 0 && !pre.stratified && !uint8_images
                            ? std::min<uint64_t>(n, static_cast<uint64_t>(pre.limit))
                            : n;
  const uint64_t per_sample = total / n;
  Shape shape = {static_cast<int64_t>(keep)};
  if (ih.shape.size() == 3) shape.push_back(1);
  for (size_t i = 1; i < ih.shape.size(); ++i) shape.push_back(static_cast<int64_t>(ih.shape[i]));
  if (!uint8_images) RETURN_IF_ERROR(CheckPreprocessingChannels(pre, shape));

  std::vector<unsigned char> label_bytes;
  RETURN_IF_ERROR(labels.ReadArray(keep * label_size, label_bytes, "label data"));
  std::vector<int> out_labels(static_cast<size_t>(keep));
  for (uint64_t i = 0; i < keep; ++i) {
    const unsigned char* p = label_bytes.data() + i * label_size;
    int64_t v = label_size == 8   ? LoadLittleEndian<int64_t>(p)
                : label_size == 4 ? LoadLittleEndian<int32_t>(p)
                                  : int64_t{p[0]};
    if (v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("file '", labels.path(), "': label ", i, " is negative (", v, ")"));
    }
    if (v >= std::numeric_limits<int>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("file '", labels.path(), "': label ", i, " is too large (", v, ")"));
    }
    out_labels[i] = static_cast<int>(v);
  }

  if (uint8_images) {
    std::vector<uint8_t> pixels;
    RETURN_IF_ERROR(images.ReadArray(n * per_sample, pixels, "uint8 image data"));
    return LoadNpyImages(images.path(), labels.path(), ih.shape, std::move(pixels), out_labels,
                         pre, options, ds);
  }
  std::vector<float> values;
  RETURN_IF_ERROR(images.ReadArray(keep * per_sample, values, "float32 image data"));
  if constexpr (std::endian::native == std::endian::big) {
    for (float& f : values) f = LoadLittleEndian<float>(reinterpret_cast<unsigned char*>(&f));
  }
  ds.images = Tensor::Float(std::move(shape), std::move(values));
  ds.labels = std::move(out_labels);
  return absl::OkStatus();
}

std::string InputShapeToString(const Shape& shape) {
  std::vector<std::string> dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i == 0) {
      dims.push_back("N");
    } else {
      dims.push_back(shape[i] > 0 ? absl::StrCat(shape[i]) : std::string("?"));
    }
  }
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

}  // namespace

Shape Dataset::shape() const { return pixels != nullptr ? pixel_shape : images.shape(); }

Shape Dataset::sample_shape() const {
  const Shape all = shape();
  if (all.empty()) return {};
  return Shape(all.begin() + 1, all.end());
}

absl::Status Dataset::ReadSamples(int64_t first, int64_t count, float* dst) const {
  if (first < 0 || count < 0 || first + count > size()) {
    return absl::OutOfRangeError(absl::StrCat("dataset '", reference, "': samples [", first, ", ",
                                              first + count, ") outside [0, ", size(), ")"));
  }
  const int64_t sample = NumElements(sample_shape());
  if (pixels == nullptr) {
    std::memcpy(dst, images.floats().data() + first * sample,
                static_cast<size_t>(count * sample) * sizeof(float));
    return absl::OkStatus();
  }
  // ToTensor then Normalize in float32, as torchvision: (x / 255 - mean) / std, through one table
  // per channel.
  const int64_t channels = pixel_shape[1];
  const int64_t plane = sample / channels;
  std::vector<std::array<float, 256>> table(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float x = static_cast<float>(v) / 255.0f;
      table[static_cast<size_t>(c)][static_cast<size_t>(v)] =
          (x - pixel_mean[static_cast<size_t>(c)]) / pixel_std[static_cast<size_t>(c)];
    }
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(count * sample));
  absl::Status read = pixels->Read(first, count, bytes.data());
  if (!read.ok()) return Annotate(read, absl::StrCat("dataset '", reference, "'"));
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t c = 0; c < channels; ++c) {
      const std::array<float, 256>& t = table[static_cast<size_t>(c)];
      const uint8_t* src = bytes.data() + i * sample + c * plane;
      float* out = dst + i * sample + c * plane;
      for (int64_t j = 0; j < plane; ++j) out[j] = t[src[j]];
    }
  }
  return absl::OkStatus();
}

std::string DatasetScheme(const std::string& reference) {
  for (const char* scheme : {"idx", "npy", "imagefolder", "list"}) {
    if (absl::StartsWith(reference, absl::StrCat(scheme, ":"))) return scheme;
  }
  return "";
}

absl::StatusOr<Dataset> LoadDataset(const std::string& reference,
                                    const Preprocessing& preprocessing,
                                    const LoadOptions& options) {
  const std::string context = absl::StrCat("dataset '", reference, "'");
  absl::Status values_ok = CheckPreprocessingValues(preprocessing);
  if (!values_ok.ok()) return Annotate(values_ok, context);

  Dataset ds;
  ds.reference = reference;
  absl::Status status;
  const std::string scheme = DatasetScheme(reference);
  const std::string location = reference.substr(std::min(reference.size(), scheme.size() + 1));
  if (scheme == "idx") {
    status = LoadIdx(location, preprocessing, ds);
  } else if (scheme == "npy") {
    status = LoadNpy(location, preprocessing, options, ds);
  } else if (scheme == "imagefolder" || scheme == "list") {
    status = LoadImageFiles(location, scheme == "imagefolder", preprocessing, options, ds);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported dataset reference '", reference, "'; ", kSupportedSchemes));
  }
  if (!status.ok()) return Annotate(status, context);

  if (ds.pixels == nullptr) {
    if (preprocessing.resize > 0 || preprocessing.center_crop > 0 || preprocessing.bgr) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, ": resize, center crop and channel order apply to image datasets "
                   "(imagefolder:, list:, uint8 npy:), not to float data"));
    }
    if (preprocessing.stratified && preprocessing.limit > 0 &&
        preprocessing.limit < ds.size()) {
      GatherFloat(data::SelectSubset(ds.labels, preprocessing.limit, true), ds);
    }
    ApplyPreprocessing(preprocessing, ds.images);
  }
  int max_label = -1;
  for (int label : ds.labels) max_label = std::max(max_label, label);
  ds.num_classes = max_label + 1;
  return ds;
}

absl::Status CheckFitsInput(const Dataset& dataset, const Shape& input_shape,
                            const std::string& input_name) {
  const Shape sample = dataset.sample_shape();
  bool fits = !input_shape.empty() && sample.size() == input_shape.size() - 1;
  for (size_t i = 0; fits && i < sample.size(); ++i) {
    const int64_t want = input_shape[i + 1];
    if (want > 0 && want != sample[i]) fits = false;
  }
  if (fits) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "dataset '", dataset.reference, "' has samples of shape ", ShapeToString(sample),
      " but model input '", input_name, "' expects ", InputShapeToString(input_shape)));
}

}  // namespace bitsweep::engine
