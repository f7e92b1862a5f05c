// Geometric preprocessing of 8-bit images with torchvision's semantics on PIL images:
// Resize(N) (shorter side to N, bilinear with antialiasing) and CenterCrop(N), bit for bit.
//
// ResizeBilinear is PIL's ImagingResample (Pillow 9.4, src/libImaging/Resample.c) for 8-bit
// images: a separable convolution with the triangle filter whose support grows with the
// downscaling factor (antialiasing), sample centres at (x + 0.5) * scale, coefficients normalized
// and turned into 22-bit fixed point, each pass rounding and clipping to 8 bits (the horizontal
// pass first, over just the rows the vertical pass reads).
//
//   Image small = ResizeShorterSide(image, 256);     // transforms.Resize(256)
//   Image crop = CenterCrop(small, 224, 224);         // transforms.CenterCrop(224)
#ifndef BITSWEEP_WORKER_ENGINE_DATA_RESAMPLE_H_
#define BITSWEEP_WORKER_ENGINE_DATA_RESAMPLE_H_

#include <cstdint>

#include "worker/engine/data/image_decode.h"

namespace bitsweep::engine::data {

// PIL's Image.resize((width, height), Image.BILINEAR) on an 8-bit image of any channel count.
Image ResizeBilinear(const Image& image, int64_t width, int64_t height);

// The size torchvision's Resize(size) gives: the shorter side becomes `size`, the longer
// int(size * long / short). Returns {height, width}.
std::pair<int64_t, int64_t> ShorterSideSize(int64_t height, int64_t width, int64_t size);

// transforms.Resize(size) on a PIL image (unchanged when already of that size).
Image ResizeShorterSide(const Image& image, int64_t size);

// transforms.CenterCrop((height, width)): offsets round((in - out) / 2) with Python's round
// (half to even); a crop larger than the image pads it with zeros first, as torchvision does.
Image CenterCrop(const Image& image, int64_t height, int64_t width);

}  // namespace bitsweep::engine::data

#endif  // BITSWEEP_WORKER_ENGINE_DATA_RESAMPLE_H_
