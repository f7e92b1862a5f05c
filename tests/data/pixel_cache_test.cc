// The in-process pixel cache: a second load of the same key shares the first's pixels while
// anyone holds them, and sets nobody holds leave the cache at the next load, so a long-lived
// worker that sees many datasets keeps nothing of the finished ones.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/data/image_loader.h"

namespace bitsweep::engine::data {
namespace {

// Four 2x2 grey images, pixel value = index.
class TinySource : public ImageSource {
 public:
  int64_t size() const override { return 4; }
  std::string name(int64_t i) const override { return "tiny" + std::to_string(i); }
  absl::StatusOr<Image> Load(int64_t i, int channels) const override {
    Image image{.height = 2, .width = 2, .channels = channels};
    image.pixels.assign(4 * channels, static_cast<uint8_t>(i));
    return image;
  }
};

std::shared_ptr<const LoadedPixels> Load(const std::string& key) {
  TinySource source;
  absl::StatusOr<std::shared_ptr<const LoadedPixels>> pixels =
      LoadPixels(source, {0, 1, 0, 1}, {.channels = 1}, {.threads = 1}, key);
  EXPECT_TRUE(pixels.ok()) << pixels.status();
  return pixels.ok() ? *pixels : nullptr;
}

TEST(PixelCacheTest, SharedWhileHeldAndForgottenOnceDropped) {
  const size_t before = PixelSetsInMemoryForTest();
  std::shared_ptr<const LoadedPixels> a = Load("pixel-cache-test-a");
  std::shared_ptr<const LoadedPixels> again = Load("pixel-cache-test-a");
  EXPECT_EQ(a.get(), again.get());  // shared, not decoded twice
  EXPECT_EQ(PixelSetsInMemoryForTest(), before + 1);

  a.reset();
  again.reset();
  // "a" is held by nobody: loading "b" sweeps it out.
  std::shared_ptr<const LoadedPixels> b = Load("pixel-cache-test-b");
  EXPECT_EQ(PixelSetsInMemoryForTest(), 1u);
  for (int i = 0; i < 20; ++i) Load("pixel-cache-test-many-" + std::to_string(i));
  // Each of those was dropped at once; only "b" (held) and the last one remain.
  EXPECT_EQ(PixelSetsInMemoryForTest(), 2u);
  EXPECT_EQ(Load("pixel-cache-test-b").get(), b.get());
}

}  // namespace
}  // namespace bitsweep::engine::data
