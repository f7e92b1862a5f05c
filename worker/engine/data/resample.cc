#include "worker/engine/data/resample.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace bitsweep::engine::data {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's PRECISION_BITS

double BilinearFilter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// PIL's precompute_coeffs followed by normalize_coeffs_8bpc, for the triangle filter (support 1)
// over the box [0, in_size).
struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;     // per output: first input index, count
  std::vector<int32_t> k;      // per output: ksize fixed-point weights
};

Coefficients Precompute(int64_t in_size, int64_t out_size) {
  const double in0 = 0.0, in1 = static_cast<double>(static_cast<float>(in_size));
  double scale = (in1 - in0) / static_cast<double>(out_size);
  double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(static_cast<size_t>(c.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (static_cast<double>(xx) + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = static_cast<int>(in_size);
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      const double v = BilinearFilter((x + xmin - center + 0.5) * ss);
      w[static_cast<size_t>(x)] = v;
      ww += v;
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[static_cast<size_t>(x)] / ww : w[static_cast<size_t>(x)];
      c.k[static_cast<size_t>(xx * c.ksize + x)] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[static_cast<size_t>(xx * 2)] = xmin;
    c.bounds[static_cast<size_t>(xx * 2 + 1)] = xmax;
  }
  return c;
}

inline uint8_t Clip8(int32_t in) {
  const int32_t v = in >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over input rows [row0, row0 + rows).
Image ResampleHorizontal(const Image& in, int64_t out_width, int64_t row0, int64_t rows,
                         const Coefficients& c) {
  Image out;
  out.width = out_width;
  out.height = rows;
  out.channels = in.channels;
  out.pixels.resize(static_cast<size_t>(out.width * out.height * out.channels));
  const int channels = in.channels;
  for (int64_t yy = 0; yy < rows; ++yy) {
    const uint8_t* src = in.pixels.data() + (yy + row0) * in.width * channels;
    uint8_t* dst = out.pixels.data() + yy * out_width * channels;
    for (int64_t xx = 0; xx < out_width; ++xx) {
      const int xmin = c.bounds[static_cast<size_t>(xx * 2)];
      const int xmax = c.bounds[static_cast<size_t>(xx * 2 + 1)];
      const int32_t* k = c.k.data() + xx * c.ksize;
      for (int ch = 0; ch < channels; ++ch) {
        int32_t ss = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < xmax; ++x) ss += src[(x + xmin) * channels + ch] * k[x];
        dst[xx * channels + ch] = Clip8(ss);
      }
    }
  }
  return out;
}

Image ResampleVertical(const Image& in, int64_t out_height, const Coefficients& c,
                       int64_t row_offset) {
  Image out;
  out.width = in.width;
  out.height = out_height;
  out.channels = in.channels;
  out.pixels.resize(static_cast<size_t>(out.width * out.height * out.channels));
  const int64_t row = in.width * in.channels;
  for (int64_t yy = 0; yy < out_height; ++yy) {
    const int ymin = c.bounds[static_cast<size_t>(yy * 2)] - static_cast<int>(row_offset);
    const int ymax = c.bounds[static_cast<size_t>(yy * 2 + 1)];
    const int32_t* k = c.k.data() + yy * c.ksize;
    uint8_t* dst = out.pixels.data() + yy * row;
    for (int64_t i = 0; i < row; ++i) {
      int32_t ss = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < ymax; ++y) ss += in.pixels[static_cast<size_t>((y + ymin) * row + i)] * k[y];
      dst[i] = Clip8(ss);
    }
  }
  return out;
}

}  // namespace

Image ResizeBilinear(const Image& image, int64_t width, int64_t height) {
  if (width == image.width && height == image.height) return image;  // PIL returns a copy
  // ImagingResampleInner: both coefficient tables first, then the horizontal pass over only the
  // rows the vertical pass reads, then the vertical pass.
  const bool need_horizontal = width != image.width;
  const bool need_vertical = height != image.height;
  const Coefficients horizontal = Precompute(image.width, width);
  const Coefficients vertical = Precompute(image.height, height);
  const int64_t ybox_first = vertical.bounds[0];
  const int64_t ybox_last = vertical.bounds[static_cast<size_t>(height * 2 - 2)] +
                            vertical.bounds[static_cast<size_t>(height * 2 - 1)];
  Image current;
  const Image* in = &image;
  int64_t row_offset = 0;
  if (need_horizontal) {
    current = ResampleHorizontal(image, width, ybox_first, ybox_last - ybox_first, horizontal);
    in = &current;
    row_offset = ybox_first;
  }
  if (need_vertical) return ResampleVertical(*in, height, vertical, row_offset);
  if (need_horizontal) return current;
  return image;
}

std::pair<int64_t, int64_t> ShorterSideSize(int64_t height, int64_t width, int64_t size) {
  const bool portrait = width <= height;
  const int64_t shorter = portrait ? width : height, longer = portrait ? height : width;
  // Python: int(size * long / short), a true (double) division truncated.
  const int64_t new_long = static_cast<int64_t>(static_cast<double>(size * longer) /
                                                static_cast<double>(shorter));
  return portrait ? std::pair{new_long, size} : std::pair{size, new_long};
}

Image ResizeShorterSide(const Image& image, int64_t size) {
  const auto [h, w] = ShorterSideSize(image.height, image.width, size);
  return ResizeBilinear(image, w, h);
}

namespace {

// Where a centred crop of `out` starts in an axis of `in` samples; negative: zero padding first.
int64_t CropOffset(int64_t in, int64_t out) {
  if (out > in) return -((out - in) / 2);
  const int64_t d = in - out;
  if (d % 2 == 0) return d / 2;
  const int64_t lower = d / 2;  // round(d / 2) with ties to even
  return lower % 2 == 0 ? lower : lower + 1;
}

}  // namespace

Image CenterCrop(const Image& image, int64_t height, int64_t width) {
  const int64_t top = CropOffset(image.height, height), left = CropOffset(image.width, width);
  Image out;
  out.height = height;
  out.width = width;
  out.channels = image.channels;
  out.pixels.assign(static_cast<size_t>(height * width * image.channels), 0);
  const int c = image.channels;
  for (int64_t y = 0; y < height; ++y) {
    const int64_t sy = y + top;
    if (sy < 0 || sy >= image.height) continue;
    const int64_t x0 = std::max<int64_t>(0, -left);
    const int64_t x1 = std::min<int64_t>(width, image.width - left);
    if (x1 <= x0) continue;
    std::copy_n(image.pixels.data() + (sy * image.width + x0 + left) * c, (x1 - x0) * c,
                out.pixels.data() + (y * width + x0) * c);
  }
  return out;
}

}  // namespace bitsweep::engine::data
