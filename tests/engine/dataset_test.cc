#include "worker/engine/dataset.h"

#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace bitsweep::engine {
namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, needle, std::string(haystack))

Preprocessing Limit(int64_t limit) {
  Preprocessing p;
  p.limit = limit;
  return p;
}

Preprocessing Norm(std::vector<float> mean, std::vector<float> std) {
  Preprocessing p;
  p.mean = std::move(mean);
  p.std = std::move(std);
  return p;
}

void AppendBigEndian32(Bytes& b, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<char>((v >> shift) & 0xff));
}

Bytes IdxImages(uint32_t n, uint32_t h, uint32_t w, const std::vector<uint8_t>& pixels,
                uint32_t magic = 0x00000803) {
  Bytes b;
  AppendBigEndian32(b, magic);
  AppendBigEndian32(b, n);
  AppendBigEndian32(b, h);
  AppendBigEndian32(b, w);
  b.append(pixels.begin(), pixels.end());
  return b;
}

Bytes IdxLabels(const std::vector<uint8_t>& labels, uint32_t magic = 0x00000801) {
  Bytes b;
  AppendBigEndian32(b, magic);
  AppendBigEndian32(b, static_cast<uint32_t>(labels.size()));
  b.append(labels.begin(), labels.end());
  return b;
}

// A .npy file: `descr`, `fortran_order`, shape text like "(2, 3)" and raw little-endian data.
Bytes Npy(const std::string& descr, bool fortran, const std::string& shape, const Bytes& data,
          int major = 1) {
  std::string header = absl::StrCat("{'descr': '", descr, "', 'fortran_order': ",
                                    fortran ? "True" : "False", ", 'shape': ", shape, ", }");
  const size_t preamble = major == 1 ? 10 : 12;
  while ((preamble + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  Bytes b = "\x93NUMPY";
  b.push_back(static_cast<char>(major));
  b.push_back(0);
  const uint32_t len = static_cast<uint32_t>(header.size());
  b.push_back(static_cast<char>(len & 0xff));
  b.push_back(static_cast<char>((len >> 8) & 0xff));
  if (major != 1) {
    b.push_back(static_cast<char>((len >> 16) & 0xff));
    b.push_back(static_cast<char>((len >> 24) & 0xff));
  }
  return b + header + data;
}

template <typename T>
Bytes RawBytes(const std::vector<T>& values) {
  Bytes b(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(b.data(), values.data(), b.size());
  return b;
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "dataset_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string Path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  void Write(const std::string& name, const Bytes& bytes) {
    std::ofstream out(Path(name), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << name;
  }

  void WriteGz(const std::string& name, const Bytes& bytes) {
    gzFile f = gzopen(Path(name).c_str(), "wb");
    ASSERT_NE(f, nullptr) << name;
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    ASSERT_EQ(gzclose(f), Z_OK);
  }

  // Three 2x2 images and labels {2, 0, 5}.
  static std::vector<uint8_t> Pixels() { return {0, 255, 1, 128, 10, 20, 30, 40, 254, 3, 7, 100}; }
  static std::vector<uint8_t> Labels() { return {2, 0, 5}; }

  std::string IdxRef(const std::string& prefix) const { return "idx:" + Path(prefix); }
  std::string NpyRef(const std::string& images, const std::string& labels) const {
    return absl::StrCat("npy:", Path(images), ",", Path(labels));
  }

  // 4-D float32 images [2,3,2,2] with values 0..23, and the given label file.
  std::vector<float> WriteNpy4d(const std::string& labels_descr, const Bytes& labels_data) {
    std::vector<float> values(24);
    for (int i = 0; i < 24; ++i) values[i] = 0.5f * static_cast<float>(i) - 3.0f;
    Write("x.npy", Npy("<f4", false, "(2, 3, 2, 2)", RawBytes(values)));
    Write("y.npy", Npy(labels_descr, false, "(2,)", labels_data));
    return values;
  }

  std::string dir_;
};

void ExpectIdxContents(const Dataset& ds) {
  ASSERT_EQ(ds.images.shape(), (Shape{3, 1, 2, 2}));
  EXPECT_EQ(ds.sample_shape(), (Shape{1, 2, 2}));
  const std::vector<uint8_t> pixels = {0, 255, 1, 128, 10, 20, 30, 40, 254, 3, 7, 100};
  ASSERT_EQ(ds.images.floats().size(), pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) {
    EXPECT_EQ(ds.images.floats()[i], static_cast<float>(pixels[i]) / 255.0f) << i;
  }
  EXPECT_EQ(ds.images.floats()[0], 0.0f);
  EXPECT_EQ(ds.images.floats()[1], 1.0f);
  EXPECT_EQ(ds.labels, (std::vector<int>{2, 0, 5}));
  EXPECT_EQ(ds.size(), 3);
  EXPECT_EQ(ds.num_classes, 6);
}

// ----------------------------------------------------------------------------------------------
// IDX

TEST_F(DatasetTest, IdxRaw) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->reference, IdxRef("d"));
  ExpectIdxContents(*ds);
}

TEST_F(DatasetTest, IdxGz) {
  WriteGz("d-images-idx3-ubyte.gz", IdxImages(3, 2, 2, Pixels()));
  WriteGz("d-labels-idx1-ubyte.gz", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  ExpectIdxContents(*ds);
}

TEST_F(DatasetTest, IdxMixedRawAndGz) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  WriteGz("d-labels-idx1-ubyte.gz", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  ExpectIdxContents(*ds);
}

TEST_F(DatasetTest, IdxPrefersRawOverGz) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  WriteGz("d-labels-idx1-ubyte.gz", IdxLabels({1, 1, 1}));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->labels, (std::vector<int>{2, 0, 5}));
}

TEST_F(DatasetTest, IdxWrongMagic) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels(), /*magic=*/0x00000801));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("d-images-idx3-ubyte"));
  EXPECT_CONTAINS(ds.status().message(), "0x00000801");
  EXPECT_CONTAINS(ds.status().message(), "magic");
}

TEST_F(DatasetTest, IdxWrongLabelMagic) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels(), /*magic=*/0x12345678));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("d-labels-idx1-ubyte"));
  EXPECT_CONTAINS(ds.status().message(), "0x12345678");
}

TEST_F(DatasetTest, IdxTruncatedImages) {
  std::vector<uint8_t> pixels = Pixels();
  pixels.resize(10);  // 12 announced
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, pixels));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("d-images-idx3-ubyte"));
  EXPECT_CONTAINS(ds.status().message(), "truncated");
  EXPECT_CONTAINS(ds.status().message(), "expected 12");
  EXPECT_CONTAINS(ds.status().message(), "got 10");
}

TEST_F(DatasetTest, IdxTruncatedHeader) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, {}).substr(0, 7));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), Path("d-images-idx3-ubyte"));
  EXPECT_CONTAINS(ds.status().message(), "expected 16");
  EXPECT_CONTAINS(ds.status().message(), "got 7");
}

TEST_F(DatasetTest, IdxTruncatedGzStream) {
  // Incompressible-ish pixels so that cutting the compressed file loses pixel data.
  std::vector<uint8_t> pixels(64 * 64 * 4);
  uint32_t state = 12345;
  for (uint8_t& p : pixels) {
    state = state * 1103515245u + 12345u;
    p = static_cast<uint8_t>(state >> 24);
  }
  WriteGz("full.gz", IdxImages(4, 64, 64, pixels));
  std::ifstream in(Path("full.gz"), std::ios::binary);
  Bytes compressed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Write("d-images-idx3-ubyte.gz", compressed.substr(0, compressed.size() / 2));
  WriteGz("d-labels-idx1-ubyte.gz", IdxLabels({0, 1, 2, 3}));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("d-images-idx3-ubyte.gz"));
}

TEST_F(DatasetTest, IdxCountMismatch) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  Write("d-labels-idx1-ubyte", IdxLabels({1, 2}));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), "3 images");
  EXPECT_CONTAINS(ds.status().message(), "2 labels");
  EXPECT_CONTAINS(ds.status().message(), Path("d-labels-idx1-ubyte"));
}

TEST_F(DatasetTest, IdxMissingFiles) {
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("nothing"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_CONTAINS(ds.status().message(), Path("nothing-images-idx3-ubyte"));
  EXPECT_CONTAINS(ds.status().message(), Path("nothing-images-idx3-ubyte.gz"));
}

TEST_F(DatasetTest, IdxMissingLabels) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_CONTAINS(ds.status().message(), Path("d-labels-idx1-ubyte"));
  EXPECT_CONTAINS(ds.status().message(), Path("d-labels-idx1-ubyte.gz"));
}

TEST_F(DatasetTest, IdxZeroDimensionsRejected) {
  Write("d-images-idx3-ubyte", IdxImages(3, 0, 2, {}));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("d-images-idx3-ubyte"));

  Write("e-images-idx3-ubyte", IdxImages(0, 2, 2, {}));
  Write("e-labels-idx1-ubyte", IdxLabels({}));
  ds = LoadDataset(IdxRef("e"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, IdxHugeHeaderFailsCleanly) {
  // Announces 4e9 images of 65536x65536 pixels but holds nothing: must not try to allocate.
  Write("d-images-idx3-ubyte", IdxImages(0xffffffffu, 65536, 65536, {}));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);

  // Plausible header, big announced size, tiny file: truncation, not an allocation failure.
  Write("e-images-idx3-ubyte", IdxImages(1000000, 100, 100, Pixels()));
  std::vector<uint8_t> labels(1000000, 1);
  Write("e-labels-idx1-ubyte", IdxLabels(labels));
  ds = LoadDataset(IdxRef("e"));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), "truncated");
  EXPECT_CONTAINS(ds.status().message(), "expected 10000000000");
}

TEST_F(DatasetTest, IdxLimit) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"), Limit(2));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.shape(), (Shape{2, 1, 2, 2}));
  EXPECT_EQ(ds->images.floats().size(), 8u);
  EXPECT_EQ(ds->images.floats()[7], 40.0f / 255.0f);
  EXPECT_EQ(ds->labels, (std::vector<int>{2, 0}));
  EXPECT_EQ(ds->num_classes, 3);  // over the kept samples only

  ds = LoadDataset(IdxRef("d"), Limit(100));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 3);

  ds = LoadDataset(IdxRef("d"), Limit(-1));
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, IdxLimitDoesNotReadTheRest) {
  std::vector<uint8_t> pixels = Pixels();
  pixels.resize(9);  // the third image is truncated, but only two are wanted
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, pixels));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"), Limit(2));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 2);
  EXPECT_FALSE(LoadDataset(IdxRef("d")).ok());
}

// ----------------------------------------------------------------------------------------------
// .npy

TEST_F(DatasetTest, NpyFloat4dInt64Labels) {
  std::vector<float> values = WriteNpy4d("<i8", RawBytes(std::vector<int64_t>{7, 3}));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.shape(), (Shape{2, 3, 2, 2}));
  EXPECT_EQ(ds->sample_shape(), (Shape{3, 2, 2}));
  EXPECT_EQ(ds->images.floats(), values);  // as is, no scaling
  EXPECT_EQ(ds->labels, (std::vector<int>{7, 3}));
  EXPECT_EQ(ds->num_classes, 8);
}

TEST_F(DatasetTest, NpyInt32Labels3dImages) {
  std::vector<float> values = {1.5f, -2.0f, 3.25f, 4.0f, 5.0f, 6.0f};
  Write("x.npy", Npy("<f4", false, "(2, 1, 3)", RawBytes(values)));
  Write("y.npy", Npy("<i4", false, "(2,)", RawBytes(std::vector<int32_t>{0, 4})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.shape(), (Shape{2, 1, 1, 3}));
  EXPECT_EQ(ds->images.floats(), values);
  EXPECT_EQ(ds->labels, (std::vector<int>{0, 4}));
  EXPECT_EQ(ds->num_classes, 5);
}

TEST_F(DatasetTest, NpyUint8Labels2dImages) {
  std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  Write("x.npy", Npy("<f4", false, "(3, 3)", RawBytes(values)));
  Write("y.npy", Npy("|u1", false, "(3,)", RawBytes(std::vector<uint8_t>{1, 200, 0})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.shape(), (Shape{3, 3}));
  EXPECT_EQ(ds->sample_shape(), (Shape{3}));
  EXPECT_EQ(ds->labels, (std::vector<int>{1, 200, 0}));
  EXPECT_EQ(ds->num_classes, 201);

  Write("z.npy", Npy("<u1", false, "(3,)", RawBytes(std::vector<uint8_t>{1, 2, 0})));
  ds = LoadDataset(NpyRef("x.npy", "z.npy"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->labels, (std::vector<int>{1, 2, 0}));
}

TEST_F(DatasetTest, NpyVersion2Header) {
  std::vector<float> values = {1, 2, 3, 4};
  Write("x.npy", Npy("<f4", false, "(2, 2)", RawBytes(values), /*major=*/2));
  Write("y.npy", Npy("<i8", false, "(2,)", RawBytes(std::vector<int64_t>{1, 0}), /*major=*/3));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.floats(), values);
  EXPECT_EQ(ds->labels, (std::vector<int>{1, 0}));
}

TEST_F(DatasetTest, NpyBadDtype) {
  Write("x.npy", Npy("<f8", false, "(2, 2)", RawBytes(std::vector<double>{1, 2, 3, 4})));
  Write("y.npy", Npy("<i8", false, "(2,)", RawBytes(std::vector<int64_t>{1, 0})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("x.npy"));
  EXPECT_CONTAINS(ds.status().message(), "'<f8'");

  Write("x.npy", Npy("<f4", false, "(2, 2)", RawBytes(std::vector<float>{1, 2, 3, 4})));
  Write("y.npy", Npy("<f4", false, "(2,)", RawBytes(std::vector<float>{1, 0})));
  ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), Path("y.npy"));
  EXPECT_CONTAINS(ds.status().message(), "'<f4'");
}

TEST_F(DatasetTest, NpyFortranOrder) {
  Write("x.npy", Npy("<f4", true, "(2, 2)", RawBytes(std::vector<float>{1, 2, 3, 4})));
  Write("y.npy", Npy("<i8", false, "(2,)", RawBytes(std::vector<int64_t>{1, 0})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("x.npy"));
  EXPECT_CONTAINS(ds.status().message(), "fortran_order");
}

TEST_F(DatasetTest, NpyTruncated) {
  Write("x.npy", Npy("<f4", false, "(2, 3)", RawBytes(std::vector<float>{1, 2, 3, 4, 5})));
  Write("y.npy", Npy("<i8", false, "(2,)", RawBytes(std::vector<int64_t>{1, 0})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("x.npy"));
  EXPECT_CONTAINS(ds.status().message(), "expected 24");
  EXPECT_CONTAINS(ds.status().message(), "got 20");
}

TEST_F(DatasetTest, NpyCountMismatch) {
  Write("x.npy", Npy("<f4", false, "(2, 2)", RawBytes(std::vector<float>{1, 2, 3, 4})));
  Write("y.npy", Npy("<i8", false, "(3,)", RawBytes(std::vector<int64_t>{1, 0, 2})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), "2 images");
  EXPECT_CONTAINS(ds.status().message(), "3 labels");
  EXPECT_CONTAINS(ds.status().message(), Path("y.npy"));
}

TEST_F(DatasetTest, NpyNegativeLabel) {
  WriteNpy4d("<i4", RawBytes(std::vector<int32_t>{1, -3}));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("y.npy"));
  EXPECT_CONTAINS(ds.status().message(), "-3");
}

TEST_F(DatasetTest, NpyBadMagicAndVersion) {
  Write("x.npy", "NOTNUMPY and some more bytes");
  Write("y.npy", Npy("<i8", false, "(2,)", RawBytes(std::vector<int64_t>{1, 0})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), Path("x.npy"));
  EXPECT_CONTAINS(ds.status().message(), "magic");

  Bytes v9 = Npy("<f4", false, "(1, 1)", RawBytes(std::vector<float>{1}));
  v9[6] = 9;
  Write("x.npy", v9);
  ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), "version 9.0");
}

TEST_F(DatasetTest, NpyMalformedHeaderAndShapes) {
  Write("y.npy", Npy("<i8", false, "(2,)", RawBytes(std::vector<int64_t>{1, 0})));
  // Rank 1 images.
  Write("x.npy", Npy("<f4", false, "(2,)", RawBytes(std::vector<float>{1, 2})));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), Path("x.npy"));
  // Rank 2 labels.
  Write("x.npy", Npy("<f4", false, "(2, 1)", RawBytes(std::vector<float>{1, 2})));
  Write("z.npy", Npy("<i8", false, "(2, 1)", RawBytes(std::vector<int64_t>{1, 0})));
  ds = LoadDataset(NpyRef("x.npy", "z.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), Path("z.npy"));
  // Garbage header dict.
  Bytes bad = Npy("<f4", false, "(2, 1)", RawBytes(std::vector<float>{1, 2}));
  bad.replace(bad.find("'shape'"), 7, "'shapX'");
  Write("x.npy", bad);
  ds = LoadDataset(NpyRef("x.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), Path("x.npy"));
  EXPECT_CONTAINS(ds.status().message(), "shape");
  // Missing file.
  ds = LoadDataset(NpyRef("missing.npy", "y.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_CONTAINS(ds.status().message(), Path("missing.npy"));
  // Not two files.
  ds = LoadDataset("npy:" + Path("x.npy"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, NpyLimit) {
  WriteNpy4d("<i8", RawBytes(std::vector<int64_t>{7, 3}));
  absl::StatusOr<Dataset> ds = LoadDataset(NpyRef("x.npy", "y.npy"), Limit(1));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.shape(), (Shape{1, 3, 2, 2}));
  EXPECT_EQ(ds->images.floats().size(), 12u);
  EXPECT_EQ(ds->labels, (std::vector<int>{7}));
  EXPECT_EQ(ds->num_classes, 8);
}

// ----------------------------------------------------------------------------------------------
// Preprocessing

TEST_F(DatasetTest, PerChannelMeanStd) {
  // Two samples of 2 channels x 2 pixels.
  std::vector<float> values = {1, 3, 10, 30,  //
                               5, 7, 2, -6};
  Write("x.npy", Npy("<f4", false, "(2, 2, 1, 2)", RawBytes(values)));
  Write("y.npy", Npy("<i8", false, "(2,)", RawBytes(std::vector<int64_t>{0, 1})));
  absl::StatusOr<Dataset> ds =
      LoadDataset(NpyRef("x.npy", "y.npy"), Norm({1.0f, 2.0f}, {2.0f, 4.0f}));
  ASSERT_TRUE(ds.ok()) << ds.status();
  // channel 0: (x - 1) / 2; channel 1: (x - 2) / 4.
  const std::vector<float> expected = {0.0f, 1.0f, 2.0f, 7.0f,  //
                                       2.0f, 3.0f, 0.0f, -2.0f};
  EXPECT_EQ(ds->images.floats(), expected);
}

TEST_F(DatasetTest, SingleMeanStdAppliesToAllChannels) {
  std::vector<float> values = {1, 3, 10, 30};
  Write("x.npy", Npy("<f4", false, "(1, 2, 1, 2)", RawBytes(values)));
  Write("y.npy", Npy("<i8", false, "(1,)", RawBytes(std::vector<int64_t>{0})));
  absl::StatusOr<Dataset> ds =
      LoadDataset(NpyRef("x.npy", "y.npy"), Norm({1.0f}, {0.5f}));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.floats(), (std::vector<float>{0.0f, 4.0f, 18.0f, 58.0f}));

  // Only a mean: std defaults to 1.
  ds = LoadDataset(NpyRef("x.npy", "y.npy"), Norm({1.0f, 10.0f}, {}));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.floats(), (std::vector<float>{0.0f, 2.0f, 0.0f, 20.0f}));

  // Only a std: mean defaults to 0.
  ds = LoadDataset(NpyRef("x.npy", "y.npy"), Norm({}, {2.0f}));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.floats(), (std::vector<float>{0.5f, 1.5f, 5.0f, 15.0f}));
}

TEST_F(DatasetTest, IdxMeanStd) {
  Write("d-images-idx3-ubyte", IdxImages(3, 2, 2, Pixels()));
  Write("d-labels-idx1-ubyte", IdxLabels(Labels()));
  absl::StatusOr<Dataset> ds = LoadDataset(IdxRef("d"), Norm({0.5f}, {0.25f}));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.floats()[0], -2.0f);  // (0 - 0.5) / 0.25
  EXPECT_EQ(ds->images.floats()[1], 2.0f);   // (1 - 0.5) / 0.25
  EXPECT_FLOAT_EQ(ds->images.floats()[3], (128.0f / 255.0f - 0.5f) / 0.25f);
}

TEST_F(DatasetTest, BadPreprocessing) {
  WriteNpy4d("<i8", RawBytes(std::vector<int64_t>{7, 3}));  // 3 channels
  const std::string ref = NpyRef("x.npy", "y.npy");

  absl::StatusOr<Dataset> ds = LoadDataset(ref, Norm({}, {0.0f}));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), "std");

  ds = LoadDataset(ref, Norm({}, {1.0f, -1.0f, 1.0f}));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);

  ds = LoadDataset(ref, Norm({0.1f, 0.2f}, {}));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), "2 mean values");
  EXPECT_CONTAINS(ds.status().message(), "3 channels");

  ds = LoadDataset(ref, Norm({0.1f}, {1, 2, 3, 4}));
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(ds.status().message(), "4 std values");

  ds = LoadDataset(ref, Norm({0.1f, 0.2f, 0.3f}, {1, 2, 3}));
  EXPECT_TRUE(ds.ok()) << ds.status();
}

TEST(DatasetRefTest, UnknownScheme) {
  absl::StatusOr<Dataset> ds = LoadDataset("csv:foo");
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(ds.status().message(), "csv:foo");
  EXPECT_CONTAINS(ds.status().message(), "idx:");
  EXPECT_CONTAINS(ds.status().message(), "npy:");
}

// ----------------------------------------------------------------------------------------------
// CheckFitsInput

TEST(CheckFitsInputTest, MatchesShapes) {
  Dataset ds;
  ds.reference = "idx:/some/where/t10k";
  ds.images = Tensor::Float({2, 1, 28, 28});
  ds.labels = {0, 1};
  EXPECT_TRUE(CheckFitsInput(ds, {-1, 1, 28, 28}, "input").ok());
  EXPECT_TRUE(CheckFitsInput(ds, {1, 1, 28, 28}, "input").ok());
  EXPECT_TRUE(CheckFitsInput(ds, {0, 1, -1, 0}, "input").ok());  // symbolic dims

  absl::Status s = CheckFitsInput(ds, {-1, 3, 32, 32}, "input");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "dataset 'idx:/some/where/t10k' has samples of shape [1,28,28] but model input "
            "'input' expects [N,3,32,32]");

  s = CheckFitsInput(ds, {-1, 784}, "flat");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "[1,28,28]");
  EXPECT_CONTAINS(s.message(), "'flat'");

  EXPECT_FALSE(CheckFitsInput(ds, {}, "input").ok());
  EXPECT_FALSE(CheckFitsInput(ds, {-1, 1, 28, 28, 1}, "input").ok());
}

// ----------------------------------------------------------------------------------------------
// Debian's Fashion-MNIST

TEST(FashionMnistTest, TestSplit) {
  const std::string ref = absl::StrCat("idx:", BITSWEEP_FASHION_MNIST_DIR, "/t10k");
  absl::StatusOr<Dataset> ds = LoadDataset(ref, Norm({0.2860f}, {0.3530f}));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 10000);
  EXPECT_EQ(ds->images.shape(), (Shape{10000, 1, 28, 28}));
  EXPECT_EQ(ds->sample_shape(), (Shape{1, 28, 28}));
  EXPECT_EQ(ds->num_classes, 10);
  std::vector<int> counts(10, 0);
  for (int label : ds->labels) ++counts[label];
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c], 1000) << "class " << c;
  EXPECT_TRUE(CheckFitsInput(*ds, {-1, 1, 28, 28}, "input").ok());
}

TEST(FashionMnistTest, TrainSplit) {
  const std::string ref = absl::StrCat("idx:", BITSWEEP_FASHION_MNIST_DIR, "/train");
  absl::StatusOr<Dataset> ds = LoadDataset(ref);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 60000);
  EXPECT_EQ(ds->images.shape(), (Shape{60000, 1, 28, 28}));
  EXPECT_EQ(ds->num_classes, 10);
  float lo = 1.0f, hi = 0.0f;
  double sum = 0;
  for (float v : ds->images.floats()) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  }
  EXPECT_EQ(lo, 0.0f);
  EXPECT_EQ(hi, 1.0f);
  // Fashion-MNIST's well-known training mean is about 0.2860.
  EXPECT_NEAR(sum / static_cast<double>(ds->images.num_elements()), 0.2860, 0.001);

  absl::StatusOr<Dataset> small = LoadDataset(ref, Limit(100));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->size(), 100);
  EXPECT_EQ(small->images.shape(), (Shape{100, 1, 28, 28}));
}

}  // namespace
}  // namespace bitsweep::engine
