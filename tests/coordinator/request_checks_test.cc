// request_checks.h alone: no database, no coordinator. Every refusal names the field and the
// value; a consistent result and an ordinary spec pass. (coordinator_test checks that a refused
// report or submit stores nothing.)
#include "server/coordinator/request_checks.h"

#include <functional>
#include <string>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitsweep::server {
namespace {

using ::testing::HasSubstr;

// Two layers whose parts add up to the totals, as the cost model reports them.
v1::TrialResult ConsistentResult() {
  v1::TrialResult r;
  r.set_top1(0.9);
  r.set_top5(0.99);
  r.set_samples(1000);
  for (auto [name, macs, weight_bits, activation_bits, energy] :
       {std::tuple{"conv1", 100, 400, 64, 1.5}, std::tuple{"fc", 20, 160, 96, 0.25}}) {
    v1::LayerResult* layer = r.add_layers();
    layer->set_name(name);
    layer->set_macs(macs);
    layer->set_weight_bits(weight_bits);
    layer->set_activation_bits(activation_bits);
    layer->set_energy_pj(energy);
  }
  r.set_macs(120);
  r.set_size_bits(560);
  r.set_activation_bits(160);
  r.set_peak_activation_bits(96);
  r.set_energy_pj(1.75);
  return r;
}

TEST(CheckResultTest, ConsistentResultPasses) {
  EXPECT_TRUE(CheckResult(ConsistentResult()).ok());
}

TEST(CheckResultTest, EachInconsistencyIsNamed) {
  struct Case {
    std::function<void(v1::TrialResult&)> change;
    std::string message;
  };
  const Case cases[] = {
      {[](v1::TrialResult& r) { r.set_top1(1.5); }, "result.top1: 1.5 is not an accuracy"},
      {[](v1::TrialResult& r) { r.set_top5(0.5); }, "result.top5: 0.5 is below top1 0.9"},
      {[](v1::TrialResult& r) { r.set_size_bits(561); },
       "result.size_bits: 561 is not the sum over its layers (560)"},
      {[](v1::TrialResult& r) { r.set_peak_activation_bits(64); },
       "result.peak_activation_bits: 64 is not the largest layer's activation_bits (96)"},
      {[](v1::TrialResult& r) { r.mutable_layers(1)->set_name("conv1"); },
       "result.layers[1]: 'conv1' repeats a layer name"},
      {[](v1::TrialResult& r) { r.set_energy_pj(2.0); },
       "result.energy_pj: 2 is not the sum over its layers (1.75)"},
  };
  for (const Case& c : cases) {
    v1::TrialResult r = ConsistentResult();
    c.change(r);
    absl::Status status = CheckResult(r);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
  }
}

TEST(CheckSpecLimitsTest, OrdinarySpecPassesAndEachLimitIsNamed) {
  v1::SweepSpec spec;
  spec.set_name("lenet5 ristretto");
  spec.set_max_attempts(3);
  spec.mutable_settings()->set_batch(256);
  EXPECT_TRUE(CheckSpecLimits(spec).ok());

  v1::SweepSpec long_name = spec;
  long_name.set_name(std::string(300, 'x'));
  EXPECT_THAT(std::string(CheckSpecLimits(long_name).message()),
              HasSubstr("name: of 300 bytes is longer than 256 bytes"));

  v1::SweepSpec big_batch = spec;
  big_batch.mutable_settings()->set_batch(1 << 20);
  EXPECT_THAT(std::string(CheckSpecLimits(big_batch).message()),
              HasSubstr("settings.batch: 1048576 is outside [0, 65536]"));

  v1::SweepSpec zero_std = spec;
  zero_std.mutable_settings()->mutable_dataset()->add_mean(0.5);
  zero_std.mutable_settings()->mutable_dataset()->add_std(0);
  EXPECT_THAT(std::string(CheckSpecLimits(zero_std).message()),
              HasSubstr("settings.dataset.std[0]: 0 is not a finite non-zero number"));

  v1::SweepSpec momentum = spec;
  momentum.mutable_finetune()->set_momentum(1.0);
  EXPECT_THAT(std::string(CheckSpecLimits(momentum).message()),
              HasSubstr("finetune.momentum: 1 is outside [0, 1)"));
}

TEST(PagingTest, TokensAndSizes) {
  EXPECT_EQ(*ParsePageToken(""), 0);
  EXPECT_EQ(*ParsePageToken("42"), 42);
  for (const char* bad : {"0", "-3", "abc", "12x"}) {
    absl::StatusOr<int64_t> token = ParsePageToken(bad);
    ASSERT_FALSE(token.ok()) << bad;
    EXPECT_THAT(std::string(token.status().message()),
                HasSubstr(std::string("page_token: '") + bad + "'"));
  }
  EXPECT_EQ(*ResolvePageSize(0, 50), 50);
  EXPECT_EQ(*ResolvePageSize(7, 50), 7);
  EXPECT_EQ(*ResolvePageSize(5000, 50), 1000);
  EXPECT_THAT(std::string(ResolvePageSize(-1, 50).status().message()),
              HasSubstr("page_size: must be >= 0, got -1"));
}

}  // namespace
}  // namespace bitsweep::server
