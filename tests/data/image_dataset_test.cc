// Image datasets against independent references, on images written at test time:
// - torchvision (Debian's python3-torchvision / python3-pil): ImageFolder with Resize ->
//   CenterCrop -> ToTensor -> Normalize over generated images in every mode and several sizes;
// - Fashion-MNIST's IDX files written out as PNG, JPEG, a shuffled list.csv and uint8 .npy: the
//   PNG copy gives the IDX samples bit for bit and the committed LeNet-5 the same top-1;
// - the cache (memory, disk, streamed), class-stratified subsets, corrupt files.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "worker/engine/data/image_decode.h"
#include "worker/engine/data/image_list.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/onnx_import.h"

namespace bitsweep::engine {
namespace {

namespace fs = std::filesystem;

const std::string kFashion = BITSWEEP_FASHION_MNIST_DIR;
constexpr int kFashionImages = 1000;

void RunFixtures(const std::string& args) {
  const std::string command =
      absl::StrCat(BITSWEEP_PYTHON, " ", BITSWEEP_IMAGE_FIXTURES, " ", args, " 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

std::vector<float> AllSamples(const Dataset& ds) {
  std::vector<float> out(static_cast<size_t>(NumElements(ds.shape())));
  absl::Status s = ds.ReadSamples(0, ds.size(), out.data());
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

class ImageDatasetTest : public testing::Test {
 protected:
  // The fixtures are written once by ctest's image_fixtures test (FIXTURES_SETUP), or here when
  // the binary runs on its own. Files a test writes go to a per-process folder.
  static void SetUpTestSuite() {
    if (!fs::exists(absl::StrCat(BITSWEEP_IMAGE_FIXTURES_DIR, "/done"))) {
      RunFixtures(absl::StrCat("all ", BITSWEEP_IMAGE_FIXTURES_DIR, " ", kFashion, "/t10k ",
                               kFashionImages));
    }
    scratch_ = new std::string(absl::StrCat(fs::temp_directory_path().string(),
                                            "/bitsweep-image-dataset-", getpid()));
    fs::create_directories(*scratch_);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*scratch_, ec);
    delete scratch_;
  }
  static std::string Path(const std::string& sub) {
    return absl::StrCat(BITSWEEP_IMAGE_FIXTURES_DIR, "/", sub);
  }
  static std::string Scratch(const std::string& sub) { return absl::StrCat(*scratch_, "/", sub); }

  // The first kFashionImages IDX test images, normalized as LeNet-5 was trained.
  static Dataset Idx() {
    absl::StatusOr<Dataset> ds = LoadDataset(absl::StrCat("idx:", kFashion, "/t10k"),
                                             {.mean = {0.2860f}, .std = {0.3530f},
                                              .limit = kFashionImages});
    EXPECT_TRUE(ds.ok()) << ds.status();
    return *ds;
  }
  static Preprocessing FashionPreprocessing() {
    return {.mean = {0.2860f}, .std = {0.3530f}, .channels = 1};
  }

  static std::string* scratch_;
};
std::string* ImageDatasetTest::scratch_ = nullptr;

// ---------------------------------------------------------------------------------------------
// torchvision equivalence.

struct TorchvisionCase {
  const char* name;
  int channels;
  int64_t resize, crop;
  std::vector<float> mean, std;
  float bound;  // max abs difference allowed after normalization
};

void PrintTo(const TorchvisionCase& c, std::ostream* os) { *os << c.name; }

class TorchvisionTest : public ImageDatasetTest,
                        public testing::WithParamInterface<TorchvisionCase> {};

TEST_P(TorchvisionTest, EqualsImageFolderWithTransforms) {
  const TorchvisionCase& c = GetParam();
  const std::string out = Scratch(absl::StrCat("ref_", c.name, ".npy"));
  const std::string labels = Scratch(absl::StrCat("ref_", c.name, "_labels.npy"));
  RunFixtures(absl::StrCat("reference ", Path("images"), " ", out, " ", labels, " ", c.channels,
                           " ", c.resize, " ", c.crop, " ", absl::StrJoin(c.mean, ","), " ",
                           absl::StrJoin(c.std, ",")));
  absl::StatusOr<Dataset> want = LoadDataset(absl::StrCat("npy:", out, ",", labels));
  ASSERT_TRUE(want.ok()) << want.status();
  absl::StatusOr<Dataset> got = LoadDataset(
      absl::StrCat("imagefolder:", Path("images")),
      {.mean = c.mean, .std = c.std, .channels = c.channels, .resize = c.resize,
       .center_crop = c.crop},
      {.threads = 2});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->shape(), want->shape());
  ASSERT_EQ(got->labels, want->labels);
  const std::vector<float> a = AllSamples(*got);
  const std::vector<float>& b = want->images.floats();
  const int64_t sample = NumElements(got->sample_shape());
  float max_diff = 0;
  int64_t differing_images = 0;
  for (int64_t i = 0; i < got->size(); ++i) {
    float image_diff = 0;
    for (int64_t j = i * sample; j < (i + 1) * sample; ++j) {
      image_diff = std::max(image_diff, std::fabs(a[j] - b[j]));
    }
    differing_images += image_diff > 0;
    max_diff = std::max(max_diff, image_diff);
  }
  std::printf("torchvision %s: %lld images, max abs difference %g, %lld images differ\n", c.name,
              static_cast<long long>(got->size()), max_diff,
              static_cast<long long>(differing_images));
  EXPECT_LE(max_diff, c.bound);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TorchvisionTest,
    testing::Values(
        // No resizing (crop only, with zero padding for the smaller images): exact.
        TorchvisionCase{"crop_only", 3, 0, 64, {0.5f}, {0.25f}, 0.0f},
        TorchvisionCase{"imagenet", 3, 256, 224, {0.485f, 0.456f, 0.406f},
                        {0.229f, 0.224f, 0.225f}, 0.0f},
        TorchvisionCase{"odd_sizes", 3, 131, 97, {0.4f, 0.5f, 0.6f}, {0.2f, 0.3f, 0.25f}, 0.0f},
        TorchvisionCase{"grayscale", 1, 32, 28, {0.5f}, {0.25f}, 0.0f}),
    [](const testing::TestParamInfo<TorchvisionCase>& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST written out as files.

// imagefolder order is by class, then file name; the file name holds the IDX index.
std::vector<int64_t> IdxIndexOfFolderSample(const std::string& dir) {
  absl::StatusOr<data::ImageList> list = data::ListImageFolder(dir);
  EXPECT_TRUE(list.ok()) << list.status();
  std::vector<int64_t> index;
  for (const data::ImageEntry& e : list->entries) {
    index.push_back(std::stoll(fs::path(e.path).stem().string()));
  }
  return index;
}

TEST_F(ImageDatasetTest, PngFolderGivesTheIdxSamplesExactly) {
  const Dataset idx = Idx();
  absl::StatusOr<Dataset> png =
      LoadDataset(absl::StrCat("imagefolder:", Path("fashion/png")), FashionPreprocessing());
  ASSERT_TRUE(png.ok()) << png.status();
  ASSERT_EQ(png->shape(), (Shape{kFashionImages, 1, 28, 28}));
  EXPECT_EQ(png->num_classes, 10);
  const std::vector<int64_t> index = IdxIndexOfFolderSample(Path("fashion/png"));
  const std::vector<float> values = AllSamples(*png);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < png->size(); ++i) {
    EXPECT_EQ(png->labels[i], idx.labels[index[i]]);
    for (int64_t j = 0; j < 784; ++j) {
      mismatches += values[i * 784 + j] != idx.images.floats()[index[i] * 784 + j];
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_F(ImageDatasetTest, LeNet5TopOneThroughPngEqualsIdx) {
  absl::StatusOr<onnx::ModelProto> model = ReadOnnxModel(BITSWEEP_LENET5_MODEL);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, "lenet5");
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<EvalResult> from_idx = Evaluate(*graph, Idx(), {.batch = 100, .threads = 2});
  ASSERT_TRUE(from_idx.ok()) << from_idx.status();
  absl::StatusOr<Dataset> png =
      LoadDataset(absl::StrCat("imagefolder:", Path("fashion/png")), FashionPreprocessing());
  ASSERT_TRUE(png.ok()) << png.status();
  absl::StatusOr<EvalResult> from_png = Evaluate(*graph, *png, {.batch = 100, .threads = 2});
  ASSERT_TRUE(from_png.ok()) << from_png.status();
  EXPECT_EQ(from_png->samples, kFashionImages);
  EXPECT_EQ(from_png->top1, from_idx->top1);
  EXPECT_EQ(from_png->top5, from_idx->top5);
  EXPECT_NEAR(from_png->loss, from_idx->loss, 1e-5);

  // JPEG (quality 90) is lossy: close, not equal.
  absl::StatusOr<Dataset> jpeg =
      LoadDataset(absl::StrCat("imagefolder:", Path("fashion/jpeg")), FashionPreprocessing());
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  absl::StatusOr<EvalResult> from_jpeg = Evaluate(*graph, *jpeg, {.batch = 100, .threads = 2});
  ASSERT_TRUE(from_jpeg.ok()) << from_jpeg.status();
  std::printf("lenet5 top-1 on %d Fashion-MNIST test images: idx %.4f, png %.4f, jpeg %.4f\n",
              kFashionImages, from_idx->top1, from_png->top1, from_jpeg->top1);
  EXPECT_NEAR(from_jpeg->top1, from_idx->top1, 0.03);
}

// Per-sample fingerprints (label and pixel values) in a canonical order.
std::vector<std::pair<int, std::vector<float>>> SortedSamples(const Dataset& ds) {
  const std::vector<float> values = AllSamples(ds);
  const int64_t sample = NumElements(ds.sample_shape());
  std::vector<std::pair<int, std::vector<float>>> out;
  for (int64_t i = 0; i < ds.size(); ++i) {
    out.emplace_back(ds.labels[i], std::vector<float>(values.begin() + i * sample,
                                                      values.begin() + (i + 1) * sample));
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST_F(ImageDatasetTest, ListCsvAndUint8NpyHoldTheSameSamples) {
  const auto want = SortedSamples(Idx());
  absl::StatusOr<Dataset> list =
      LoadDataset(absl::StrCat("list:", Path("fashion/list.csv")), FashionPreprocessing());
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(SortedSamples(*list) == want);
  for (const char* layout : {"u8_nhwc", "u8_nchw"}) {
    absl::StatusOr<Dataset> npy = LoadDataset(
        absl::StrCat("npy:", Path(absl::StrCat("fashion/", layout, ".npy")), ",",
                     Path("fashion/labels.npy")),
        FashionPreprocessing());
    ASSERT_TRUE(npy.ok()) << npy.status();
    // RGB copies of gray images convert back to the same gray values.
    EXPECT_TRUE(SortedSamples(*npy) == want) << layout;
    absl::StatusOr<Dataset> rgb = LoadDataset(
        absl::StrCat("npy:", Path(absl::StrCat("fashion/", layout, ".npy")), ",",
                     Path("fashion/labels.npy")));
    ASSERT_TRUE(rgb.ok()) << rgb.status();
    EXPECT_EQ(rgb->shape(), (Shape{kFashionImages, 3, 28, 28})) << layout;
  }
}

TEST_F(ImageDatasetTest, BgrReversesTheChannels) {
  const std::string ref = absl::StrCat("imagefolder:", Path("images"));
  absl::StatusOr<Dataset> rgb = LoadDataset(ref, {.center_crop = 32});
  absl::StatusOr<Dataset> bgr = LoadDataset(ref, {.center_crop = 32, .bgr = true});
  ASSERT_TRUE(rgb.ok() && bgr.ok());
  const std::vector<float> a = AllSamples(*rgb), b = AllSamples(*bgr);
  const int64_t plane = 32 * 32;
  for (int64_t i = 0; i < rgb->size(); ++i) {
    for (int c = 0; c < 3; ++c) {
      ASSERT_TRUE(std::equal(a.begin() + (i * 3 + c) * plane, a.begin() + (i * 3 + c + 1) * plane,
                             b.begin() + (i * 3 + 2 - c) * plane));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decode once: memory, disk, streaming.

TEST_F(ImageDatasetTest, SecondLoadDecodesNothing) {
  const std::string cache = Scratch("cache");
  const std::string ref = absl::StrCat("imagefolder:", Path("fashion/png"));
  std::vector<float> first_values;
  {
    absl::StatusOr<Dataset> first = LoadDataset(ref, FashionPreprocessing(), {.cache_dir = cache});
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->decoded_images, kFashionImages);
    first_values = AllSamples(*first);
    // While it is alive, another dataset over the same files shares its pixels.
    Preprocessing other = FashionPreprocessing();
    other.mean = {0.5f};
    absl::StatusOr<Dataset> shared = LoadDataset(ref, other, {.cache_dir = cache});
    ASSERT_TRUE(shared.ok()) << shared.status();
    EXPECT_EQ(shared->decoded_images, 0);
    EXPECT_EQ(shared->pixels, first->pixels);
  }
  // Gone from memory: read back from the cache file, resident and streamed.
  for (int64_t resident : {int64_t{1} << 30, int64_t{1}}) {
    absl::StatusOr<Dataset> again =
        LoadDataset(ref, FashionPreprocessing(), {.cache_dir = cache,
                                                  .max_resident_bytes = resident});
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->decoded_images, 0);
    EXPECT_EQ(AllSamples(*again), first_values) << "resident limit " << resident;
  }
  // A streamed set decoded without a cache file to stream from is refused.
  absl::StatusOr<Dataset> no_cache = LoadDataset(
      absl::StrCat("imagefolder:", Path("fashion/jpeg")), FashionPreprocessing(),
      {.max_resident_bytes = 1});
  EXPECT_FALSE(no_cache.ok());
  // Decoded straight into the stream (no resident copy), equal to the resident load.
  absl::StatusOr<Dataset> streamed = LoadDataset(
      absl::StrCat("imagefolder:", Path("fashion/jpeg")), FashionPreprocessing(),
      {.cache_dir = cache, .max_resident_bytes = 1});
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->decoded_images, kFashionImages);
  absl::StatusOr<Dataset> resident = LoadDataset(
      absl::StrCat("imagefolder:", Path("fashion/jpeg")), FashionPreprocessing());
  ASSERT_TRUE(resident.ok()) << resident.status();
  EXPECT_EQ(AllSamples(*streamed), AllSamples(*resident));
}

// ---------------------------------------------------------------------------------------------
// Subsets.

TEST(SelectSubsetTest, StratifiedKeepsClassSharesAndOrder) {
  // 60 of class 0, 30 of class 1, 10 of class 2, interleaved.
  std::vector<int> labels;
  for (int i = 0; i < 100; ++i) labels.push_back(i % 10 < 6 ? 0 : (i % 10 < 9 ? 1 : 2));
  const std::vector<int64_t> keep = data::SelectSubset(labels, 10, true);
  ASSERT_EQ(keep.size(), 10u);
  std::map<int, int> per_class;
  for (int64_t i : keep) ++per_class[labels[i]];
  EXPECT_EQ(per_class, (std::map<int, int>{{0, 6}, {1, 3}, {2, 1}}));
  EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
  // Largest remainders: 7 of (60, 30, 10) -> 4.2, 2.1, 0.7 -> 4, 2, 1.
  per_class.clear();
  for (int64_t i : data::SelectSubset(labels, 7, true)) ++per_class[labels[i]];
  EXPECT_EQ(per_class, (std::map<int, int>{{0, 4}, {1, 2}, {2, 1}}));
  // Not stratified: the first N.
  EXPECT_EQ(data::SelectSubset(labels, 3, false), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(data::SelectSubset(labels, 0, true).size(), 100u);
}

// Found by tests/fuzz (npy_reader): a stratified subset allocated a counter per class up to the
// largest label, so one label of 539,000,000 in a .npy file asked for 4.3 GB.
TEST(SelectSubsetTest, HugeLabelValuesCostNoMemory) {
  const int big = std::numeric_limits<int>::max() - 1;
  const std::vector<int> labels = {big, 0, big, 0, 5, big};
  const std::vector<int64_t> keep = data::SelectSubset(labels, 4, true);
  // Shares 3, 2, 1 of 6 -> 2, 1.33, 0.67 -> 2, 1, 1 (largest remainder to label 5).
  EXPECT_EQ(keep, (std::vector<int64_t>{0, 1, 2, 4}));
}

TEST_F(ImageDatasetTest, StratifiedLimitOnAClassSortedFolder) {
  Preprocessing pre = FashionPreprocessing();
  pre.limit = 100;
  pre.stratified = true;
  absl::StatusOr<Dataset> ds = LoadDataset(absl::StrCat("imagefolder:", Path("fashion/png")), pre);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 100);
  EXPECT_EQ(ds->decoded_images, 100);  // only the kept images are decoded
  std::map<int, int> per_class;
  for (int l : ds->labels) ++per_class[l];
  EXPECT_EQ(per_class.size(), 10u);
  for (const auto& [label, count] : per_class) EXPECT_NEAR(count, 10, 3) << label;
  // The IDX split gets the same kind of subset.
  absl::StatusOr<Dataset> idx = LoadDataset(absl::StrCat("idx:", kFashion, "/t10k"),
                                            {.limit = 100, .stratified = true});
  ASSERT_TRUE(idx.ok()) << idx.status();
  per_class.clear();
  for (int l : idx->labels) ++per_class[l];
  EXPECT_EQ(per_class, (std::map<int, int>{{0, 10}, {1, 10}, {2, 10}, {3, 10}, {4, 10},
                                           {5, 10}, {6, 10}, {7, 10}, {8, 10}, {9, 10}}));
}

// ---------------------------------------------------------------------------------------------
// Bad input.

TEST_F(ImageDatasetTest, BadFilesAreNamedOrSkippedAndCounted) {
  const std::string ref = absl::StrCat("imagefolder:", Path("bad"));
  absl::StatusOr<Dataset> strict = LoadDataset(ref, {});
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(strict.status().message(), "b_truncated.jpg")) << strict.status();
  EXPECT_TRUE(absl::StrContains(strict.status().message(), "truncated")) << strict.status();

  absl::StatusOr<Dataset> skipping = LoadDataset(ref, {.skip_bad_images = true});
  ASSERT_TRUE(skipping.ok()) << skipping.status();
  EXPECT_EQ(skipping->size(), 2);
  EXPECT_EQ(skipping->skipped_images, 4);
  ASSERT_EQ(skipping->skipped_names.size(), 4u);
  EXPECT_TRUE(absl::EndsWith(skipping->skipped_names[0], "b_truncated.jpg"));
  EXPECT_TRUE(absl::EndsWith(skipping->skipped_names[1], "c_text.jpg"));
  EXPECT_TRUE(absl::EndsWith(skipping->skipped_names[2], "d_cmyk.jpg"));
  EXPECT_TRUE(absl::EndsWith(skipping->skipped_names[3], "f_truncated.png"));

  // Each bad file on its own names itself and its problem.
  for (const auto& [file, problem] : std::vector<std::pair<std::string, std::string>>{
           {"c_text.jpg", "not a JPEG or PNG"}, {"d_cmyk.jpg", "CMYK"},
           {"f_truncated.png", "truncated PNG"}}) {
    const std::string csv = Scratch(absl::StrCat("bad_", file, ".csv"));
    FILE* f = std::fopen(csv.c_str(), "w");
    std::fprintf(f, "%s,0\n", Path(absl::StrCat("bad/x/", file)).c_str());
    std::fclose(f);
    absl::StatusOr<Dataset> one = LoadDataset(absl::StrCat("list:", csv), {});
    ASSERT_FALSE(one.ok()) << file;
    EXPECT_TRUE(absl::StrContains(one.status().message(), file)) << one.status();
    EXPECT_TRUE(absl::StrContains(one.status().message(), problem)) << one.status();
  }
}

// Damaged files never crash the decoders: every mutation decodes or is an INVALID_ARGUMENT
// naming the file.
TEST_F(ImageDatasetTest, MutatedFilesDecodeOrFailCleanly) {
  std::mt19937 rng(7);
  for (const char* file : {"images/alpha/01_rgb.jpg", "images/alpha/01_prog.JPG",
                           "images/beta/08_pal.png", "images/gamma/15_rgba.png"}) {
    std::ifstream in(Path(file), std::ios::binary);
    const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(good.empty()) << file;
    int failures = 0;
    for (int round = 0; round < 150; ++round) {
      std::string bytes = good;
      if (round % 3 == 0) {
        bytes.resize(rng() % bytes.size());  // truncated anywhere
      } else {
        for (int k = 0; k < 1 + round % 7; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
      }
      absl::StatusOr<data::Image> image = data::DecodeImage(bytes, file, 3);
      if (image.ok()) {
        EXPECT_EQ(image->pixels.size(),
                  static_cast<size_t>(image->height * image->width * 3));
      } else {
        ++failures;
        EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
        EXPECT_TRUE(absl::StrContains(image.status().message(), file)) << image.status();
      }
    }
    EXPECT_GT(failures, 0) << file;
  }
}

TEST_F(ImageDatasetTest, ReferenceAndGeometryErrors) {
  absl::StatusOr<Dataset> missing = LoadDataset(absl::StrCat("imagefolder:", Path("nowhere")));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), Path("nowhere")));
  // Images of several sizes without --resize / --center-crop.
  absl::StatusOr<Dataset> sizes = LoadDataset(absl::StrCat("imagefolder:", Path("images")));
  ASSERT_FALSE(sizes.ok());
  EXPECT_TRUE(absl::StrContains(sizes.status().message(), "--center-crop")) << sizes.status();
  // A missing file named in a list.
  const std::string csv = Scratch("missing.csv");
  FILE* f = std::fopen(csv.c_str(), "w");
  std::fprintf(f, "path,label\nnothere.png,0\n");
  std::fclose(f);
  absl::StatusOr<Dataset> absent = LoadDataset(absl::StrCat("list:", csv));
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(absent.status().message(), "nothere.png")) << absent.status();
  // Geometry on float data, mean/std that do not match the channels.
  EXPECT_FALSE(LoadDataset(absl::StrCat("idx:", kFashion, "/t10k"), {.resize = 32}).ok());
  EXPECT_FALSE(LoadDataset(absl::StrCat("imagefolder:", Path("fashion/png")),
                           {.mean = {0.1f, 0.2f}, .channels = 3})
                   .ok());
}

}  // namespace
}  // namespace bitsweep::engine
