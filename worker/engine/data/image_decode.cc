#include "worker/engine/data/image_decode.h"

// clang-format off: jpeglib.h needs <cstdio> (FILE, size_t) before it.
#include <csetjmp>
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
// clang-format on

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace bitsweep::engine::data {
namespace {

// Upper bound on decoded pixels (width * height): a corrupt header announcing gigapixels is an
// error, not a huge allocation.
constexpr int64_t kMaxPixels = int64_t{1} << 28;

absl::Status Bad(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("image '", name, "': ", what));
}

// ---------------------------------------------------------------------------------------------
// JPEG (libjpeg-turbo). Errors longjmp back to DecodeJpeg; only trivially destructible locals
// live between setjmp and the calls that may jump.

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings are ignored as PIL ignores them (e.g. extraneous bytes before a marker), except the
// end of data arriving early: PIL refuses truncated images, and so do we.
void JpegEmitMessage(j_common_ptr cinfo, int level) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    err->truncated = true;
    (*cinfo->err->format_message)(cinfo, err->message);
  }
}

// `image` lives in the caller's frame: nothing with a destructor is modified in this frame after
// setjmp.
absl::Status DecodeJpeg(absl::string_view bytes, absl::string_view name, Image* image) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  std::memset(&err, 0, sizeof(err));
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  err.mgr.emit_message = JpegEmitMessage;
  if (setjmp(err.jump) != 0) {
    jpeg_destroy_decompress(&cinfo);
    return Bad(name, absl::StrCat("corrupt JPEG data (", err.message, ")"));
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  // PIL's decoder: RGB for colour images, grayscale kept as one channel; default (ISLOW) DCT and
  // fancy upsampling, which are libjpeg's defaults too.
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    return Bad(name, "CMYK / YCCK JPEGs are not supported (convert the file to RGB)");
  }
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  if (static_cast<int64_t>(cinfo.image_width) * cinfo.image_height > kMaxPixels) {
    jpeg_destroy_decompress(&cinfo);
    return Bad(name, absl::StrCat("implausible JPEG size ", cinfo.image_width, "x",
                                  cinfo.image_height));
  }
  jpeg_start_decompress(&cinfo);
  image->width = cinfo.output_width;
  image->height = cinfo.output_height;
  image->channels = cinfo.output_components;
  image->pixels.resize(static_cast<size_t>(image->width * image->height * image->channels));
  while (cinfo.output_scanline < cinfo.output_height && !err.truncated) {
    JSAMPROW row = image->pixels.data() +
                   static_cast<size_t>(cinfo.output_scanline) * cinfo.output_width *
                       cinfo.output_components;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  if (!err.truncated) jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (err.truncated) return Bad(name, "truncated JPEG file (the data ends early)");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// PNG (libpng).

struct PngState {
  const unsigned char* data;
  size_t size;
  size_t offset;
  char message[256];
};

void PngError(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof(state->message), "%s", message);
  png_longjmp(png, 1);
}

void PngWarning(png_structp, png_const_charp) {}

void PngRead(png_structp png, png_bytep out, png_size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (state->size - state->offset < length) png_error(png, "truncated PNG file (the data ends early)");
  std::memcpy(out, state->data + state->offset, length);
  state->offset += length;
}

// As DecodeJpeg: `image` and `rows` live in the caller's frame.
absl::Status DecodePng(absl::string_view bytes, absl::string_view name, Image* image,
                       std::vector<png_bytep>* rows) {
  PngState state;
  std::memset(&state, 0, sizeof(state));
  state.data = reinterpret_cast<const unsigned char*>(bytes.data());
  state.size = bytes.size();
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, PngError, PngWarning);
  if (png == nullptr) return absl::ResourceExhaustedError("png_create_read_struct failed");
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return absl::ResourceExhaustedError("png_create_info_struct failed");
  }
  if (setjmp(png_jmpbuf(png)) != 0) {
    png_destroy_read_struct(&png, &info, nullptr);
    return Bad(name, absl::StrCat("corrupt PNG data (", state.message, ")"));
  }
  png_set_read_fn(png, &state, PngRead);
  png_set_user_limits(png, 1u << 20, 1u << 20);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  const int color_type = png_get_color_type(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  if (static_cast<int64_t>(width) * height > kMaxPixels) {
    png_destroy_read_struct(&png, &info, nullptr);
    return Bad(name, absl::StrCat("implausible PNG size ", width, "x", height));
  }
  // 8 bits per sample, palette through the palette (no tRNS -> alpha, as PIL's convert("RGB")),
  // alpha kept here and dropped in ConvertChannels.
  if (bit_depth == 16) png_set_strip_16(png);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image->width = width;
  image->height = height;
  image->channels = png_get_channels(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(image->width * image->channels)) {
    png_destroy_read_struct(&png, &info, nullptr);
    return Bad(name, "unexpected PNG row layout after conversion to 8 bits");
  }
  image->pixels.resize(static_cast<size_t>(image->width * image->height * image->channels));
  rows->resize(static_cast<size_t>(image->height));
  for (int64_t y = 0; y < image->height; ++y) {
    (*rows)[static_cast<size_t>(y)] = image->pixels.data() + y * image->width * image->channels;
  }
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return absl::OkStatus();
}

}  // namespace

std::string SniffImageFormat(absl::string_view bytes) {
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
      static_cast<unsigned char>(bytes[1]) == 0xD8 && static_cast<unsigned char>(bytes[2]) == 0xFF) {
    return "jpeg";
  }
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0) return "png";
  return "";
}

absl::StatusOr<Image> ConvertChannels(Image image, int to) {
  if (to != 1 && to != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("images can become 1 (grayscale) or 3 (RGB) channels, not ", to));
  }
  const int from = image.channels;
  if (from < 1 || from > 4) {
    return absl::InvalidArgumentError(absl::StrCat("images with ", from, " channels are not "
                                                   "supported (1, 2, 3 or 4)"));
  }
  const bool from_colour = from >= 3;
  if (from == to) return image;
  const int64_t n = image.height * image.width;
  std::vector<uint8_t> out(static_cast<size_t>(n * to));
  const uint8_t* in = image.pixels.data();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = in + i * from;
    uint8_t* q = out.data() + i * to;
    if (to == 3) {
      if (from_colour) {
        q[0] = p[0], q[1] = p[1], q[2] = p[2];  // RGBA: alpha dropped
      } else {
        q[0] = q[1] = q[2] = p[0];  // gray (+ alpha): replicated
      }
    } else if (from_colour) {
      q[0] = static_cast<uint8_t>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
    } else {
      q[0] = p[0];  // gray + alpha
    }
  }
  image.pixels = std::move(out);
  image.channels = to;
  return image;
}

absl::StatusOr<Image> DecodeImage(absl::string_view bytes, absl::string_view name, int channels) {
  const std::string format = SniffImageFormat(bytes);
  Image image;
  if (format == "jpeg") {
    RETURN_IF_ERROR(DecodeJpeg(bytes, name, &image));
  } else if (format == "png") {
    std::vector<png_bytep> rows;
    RETURN_IF_ERROR(DecodePng(bytes, name, &image, &rows));
  } else if (bytes.empty()) {
    return Bad(name, "empty file");
  } else {
    return Bad(name, "not a JPEG or PNG image (unrecognized signature)");
  }
  absl::StatusOr<Image> converted = ConvertChannels(std::move(image), channels);
  if (!converted.ok()) return Bad(name, converted.status().message());
  return converted;
}

}  // namespace bitsweep::engine::data
