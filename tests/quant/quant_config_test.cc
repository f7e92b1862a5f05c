// Trial configs: JSON parsing with errors that name the field, canonical form and hash, and the
// layer > class > default resolution of formats.
#include <string>

#include "gtest/gtest.h"
#include "quant/config.h"

namespace bitsweep::quant {
namespace {

std::vector<LayerInfo> TwoConvOneFc() {
  LayerInfo conv1, conv2, fc;
  conv1.name = "conv1";
  conv2.name = "conv2";
  fc.name = "fc1";
  conv1.layer_class = conv2.layer_class = LayerClass::kConv;
  fc.layer_class = LayerClass::kFc;
  return {conv1, conv2, fc};
}

TEST(QuantConfigTest, IssueExampleResolvesWithPrecedence) {
  absl::StatusOr<QuantConfig> c = ParseQuantConfig(R"({
      "default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"},
      "fc": {"weights": "fixed:4"},
      "layers": {"conv1": {"weights": "pow2:4"}},
      "rounding": "nearest_even"})");
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<std::vector<LayerFormats>> f = ResolveFormats(*c, TwoConvOneFc());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(FormatToString((*f)[0].weights), "pow2:4");   // layer
  EXPECT_EQ(FormatToString((*f)[1].weights), "fixed:8");  // default
  EXPECT_EQ(FormatToString((*f)[2].weights), "fixed:4");  // class
  for (const LayerFormats& lf : *f) {
    EXPECT_EQ(FormatToString(lf.inputs), "fixed:8");
    EXPECT_EQ(FormatToString(lf.outputs), "fixed:8");
  }
}

TEST(QuantConfigTest, UnsetRolesStayFp32) {
  absl::StatusOr<QuantConfig> c = ParseQuantConfig(R"({"conv": {"weights": "int:8"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<std::vector<LayerFormats>> f = ResolveFormats(*c, TwoConvOneFc());
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)[0].weights.kind, FormatKind::kInt);
  EXPECT_EQ((*f)[0].outputs.kind, FormatKind::kFp32);
  EXPECT_EQ((*f)[2].weights.kind, FormatKind::kFp32);
}

TEST(QuantConfigTest, CanonicalFormIgnoresSpellingAndOrder) {
  absl::StatusOr<QuantConfig> a = ParseQuantConfig(
      R"({"fc": {"weights": "int:8"}, "default": {"outputs": "fixed:8"}, "layers": {}})");
  absl::StatusOr<QuantConfig> b = ParseQuantConfig(
      R"({"default":{"outputs":"fixed:8"},"fc":{"weights":"int:8:sym:tensor"},
          "rounding":"nearest_even","seed":0,"calibration":{"method":"max"}})");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(CanonicalJson(*a), CanonicalJson(*b));
  EXPECT_EQ(ConfigHash(*a), ConfigHash(*b));
  EXPECT_EQ(ConfigHash(*a).size(), 64u);
  absl::StatusOr<QuantConfig> c = ParseQuantConfig(R"({"default": {"outputs": "fixed:7"}})");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(ConfigHash(*a), ConfigHash(*c));
  // The canonical text parses back to the same canonical text.
  absl::StatusOr<QuantConfig> again = ParseQuantConfig(CanonicalJson(*a));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(CanonicalJson(*again), CanonicalJson(*a));
}

TEST(QuantConfigTest, KnownHashOfTheEmptyConfig) {
  // sha256 of the canonical text, computed independently with `sha256sum`.
  absl::StatusOr<QuantConfig> c = ParseQuantConfig("{}");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(CanonicalJson(*c),
            R"({"calibration":{"method":"max"},"ristretto_activations":false,)"
            R"("rounding":"nearest_even","seed":0})");
  EXPECT_EQ(ConfigHash(*c), "4224a2172634205c818cffbdb9e2f8a63c6dcec69de69bd836896ae0db30c715");
}

TEST(QuantConfigTest, ErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* message;
  };
  const Case cases[] = {
      {R"({"default": {"weights": "fixd:8"}})", "default.weights"},
      {R"({"layers": {"conv1": {"weights": "fixed:0"}}})", "layers.conv1.weights"},
      {R"({"layers": {"conv1": {"bias": "fixed:8"}}})", "layers.conv1.bias"},
      {R"({"defaults": {}})", "defaults"},
      {R"({"rounding": "up"})", "rounding"},
      {R"({"calibration": {"method": "kl"}})", "calibration.method"},
      {R"({"calibration": {"percentile": 120}})", "calibration.percentile"},
      {R"({"seed": -1})", "seed"},
      {R"({"default": {"weights": 8}})", "default.weights"},
      {R"([1, 2])", "JSON object"},
      {R"({"default": )", "not valid JSON"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<QuantConfig> r = ParseQuantConfig(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_NE(r.status().message().find(c.message), std::string::npos)
        << c.json << " -> " << r.status();
  }
}

// Found by tests/fuzz (quant_config): a number beyond double's range made nlohmann throw
// out_of_range, which is not a parse_error, and the exception ended the process.
TEST(QuantConfigTest, NumberOutOfRangeIsAnError) {
  for (const char* json : {R"({"seed": 1e999})", R"({"calibration": {"percentile": -1e400}})",
                           R"([[[["" ,100e04444 ]]]])"}) {
    absl::StatusOr<QuantConfig> r = ParseQuantConfig(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find("number overflow"), std::string::npos) << r.status();
  }
}

TEST(QuantConfigTest, ImpossibleRolesNameLayerAndRole) {
  absl::StatusOr<QuantConfig> pow2_out = ParseQuantConfig(R"({"fc": {"outputs": "pow2:4"}})");
  ASSERT_TRUE(pow2_out.ok());
  absl::StatusOr<std::vector<LayerFormats>> f = ResolveFormats(*pow2_out, TwoConvOneFc());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("layer 'fc1' outputs"), std::string::npos) << f.status();

  absl::StatusOr<QuantConfig> channel_in =
      ParseQuantConfig(R"({"default": {"inputs": "int:8:sym:channel"}})");
  ASSERT_TRUE(channel_in.ok());
  f = ResolveFormats(*channel_in, TwoConvOneFc());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("layer 'conv1' inputs"), std::string::npos) << f.status();

  absl::StatusOr<QuantConfig> unknown =
      ParseQuantConfig(R"({"layers": {"conv9": {"weights": "fixed:8"}}})");
  ASSERT_TRUE(unknown.ok());
  f = ResolveFormats(*unknown, TwoConvOneFc());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("conv9"), std::string::npos);
  EXPECT_NE(f.status().message().find("conv1, conv2, fc1"), std::string::npos) << f.status();
}

}  // namespace
}  // namespace bitsweep::quant
