// Image decoding with the system's libjpeg-turbo and libpng, into 8-bit interleaved pixels with the
// channel count a model takes -- the conversions torchvision's ImageFolder loader makes through
// PIL (`Image.open(f).convert("RGB")`, then `transforms.Grayscale()` for one-channel models).
//
//   ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
//   ASSIGN_OR_RETURN(Image image, DecodeImage(bytes, path, /*channels=*/3));
//   image.at(y, x, c);   // uint8, rows of width * channels bytes
//
// Formats are recognized by their signature, not the file name. Modes: grayscale (1, 2, 4, 8 and
// 16 bits; 16-bit samples keep their high byte), palette (expanded through the palette, its
// transparency ignored as PIL's convert("RGB") does), RGB, grayscale+alpha and RGBA (alpha
// dropped, as convert("RGB") does). Three-channel images become one channel with PIL's ITU-R
// 601-2 luma in fixed point, L = (19595 R + 38470 G + 7471 B + 32768) >> 16; one channel becomes
// three by replication. CMYK / YCCK JPEGs are refused. Every failure (not an image, truncated or
// corrupt data, unsupported mode) is an INVALID_ARGUMENT naming `name`.
#ifndef BITSWEEP_WORKER_ENGINE_DATA_IMAGE_DECODE_H_
#define BITSWEEP_WORKER_ENGINE_DATA_IMAGE_DECODE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitsweep::engine::data {

// 8-bit pixels, row-major, channels interleaved (HWC).
struct Image {
  int64_t height = 0;
  int64_t width = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels

  uint8_t at(int64_t y, int64_t x, int c) const {
    return pixels[static_cast<size_t>((y * width + x) * channels + c)];
  }
};

// What the bytes look like from their first bytes: "jpeg", "png", or empty.
std::string SniffImageFormat(absl::string_view bytes);

// Decodes a JPEG or PNG held in `bytes` to `channels` (1 or 3) channels. `name` (usually the path)
// appears in every error.
absl::StatusOr<Image> DecodeImage(absl::string_view bytes, absl::string_view name, int channels);

// Converts interleaved 8-bit pixels of `from` channels (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) to
// `to` channels (1 or 3) as DecodeImage does. Used for uint8 .npy images too.
absl::StatusOr<Image> ConvertChannels(Image image, int to);

}  // namespace bitsweep::engine::data

#endif  // BITSWEEP_WORKER_ENGINE_DATA_IMAGE_DECODE_H_
