// Helpers for the coordinator tests: a tiny valid ONNX model, a scripted fake strategy injected
// through CoordinatorOptions.strategy_factory, hand-made TrialResults, and a temp database path.
//
//   FakePlans plans;                      // shared with the fake strategy
//   plans.Set("sweep-a", {{"baseline", {"{}"}}, {"grid", {Fixed(8), Fixed(4)}}});
//   options.strategy_factory = FakeStrategyFactory(&plans);
#ifndef BITSWEEP_TESTS_COORDINATOR_TEST_UTIL_H_
#define BITSWEEP_TESTS_COORDINATOR_TEST_UTIL_H_

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bitsweep/v1/explorer.pb.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "server/planner/strategy.h"

namespace bitsweep::server::testing {

// A fresh database path in the test's temp dir (unique per call).
inline std::string TempDbPath(const std::string& tag) {
  static std::atomic<int> counter{0};
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path path =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("bitsweep_", info != nullptr ? info->test_suite_name() : "t", "_",
                   info != nullptr ? info->name() : "t", "_", tag, "_", counter++, ".db");
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::filesystem::remove(path.string() + suffix);
  }
  return path.string();
}

// A one-node (Relu) model that passes onnx::checker; `doc` makes distinct models.
inline std::string TinyOnnxModel(const std::string& doc = "tiny", const std::string& op = "Relu") {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("bitsweep-test");
  model.set_doc_string(doc);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("tiny");
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type(op);
  node->set_name("relu1");
  const std::string input = "x", output = "y";
  node->add_input(input);
  node->add_output(output);
  for (auto [value_info, name] : {std::pair{graph->add_input(), "x"},
                                  std::pair{graph->add_output(), "y"}}) {
    value_info->set_name(name);
    auto* tensor = value_info->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    tensor->mutable_shape()->add_dim()->set_dim_value(1);
    tensor->mutable_shape()->add_dim()->set_dim_value(4);
  }
  return model.SerializeAsString();
}

inline std::string WeightsConfig(const std::string& format) {
  return absl::StrCat(R"({"default": {"weights": ")", format, R"("}})");
}

// One planner step of the fake: its stage and one trial per config (label = config), or a
// failure text.
struct FakeStep {
  std::string stage;
  std::vector<std::string> configs;
  std::string failure;
  bool collect_ranges = false;
  int64_t finetune_steps = 0;
};

// The plans of the fake strategy, by sweep name; also records what Next saw.
class FakePlans {
 public:
  void Set(const std::string& sweep_name, std::vector<FakeStep> steps) {
    absl::MutexLock lock(&mu_);
    plans_[sweep_name] = std::move(steps);
  }
  std::vector<FakeStep> Get(const std::string& sweep_name) const {
    absl::MutexLock lock(&mu_);
    auto it = plans_.find(sweep_name);
    return it == plans_.end() ? std::vector<FakeStep>{} : it->second;
  }
  void Record(const std::vector<TrialOutcome>& outcomes) {
    absl::MutexLock lock(&mu_);
    calls_.push_back(outcomes);
  }
  std::vector<std::vector<TrialOutcome>> calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::vector<FakeStep>> plans_;
  std::vector<std::vector<TrialOutcome>> calls_;
};

// Pure like a real strategy: which step comes next follows from how many outcomes there are.
class FakeStrategy : public Strategy {
 public:
  explicit FakeStrategy(FakePlans* plans) : plans_(plans) {}

  absl::Status Validate(const v1::SweepSpec& spec) const override {
    if (spec.name() == "invalid") {
      return absl::InvalidArgumentError("space.axes: the fake rejects sweeps named 'invalid'");
    }
    if (plans_->Get(spec.name()).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("name: no fake plan for '", spec.name(), "'"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    plans_->Record(outcomes);
    const std::vector<FakeStep> steps = plans_->Get(spec.name());
    size_t finished = 0;
    for (size_t k = 0; k <= steps.size(); ++k) {
      if (finished == outcomes.size()) {
        PlanStep step;
        if (k == steps.size()) {
          step.done = true;
          return step;
        }
        step.stage = steps[k].stage;
        step.failure = steps[k].failure;
        for (const std::string& config : steps[k].configs) {
          v1::TrialSpec& trial = step.trials.emplace_back();
          trial.set_config_json(config);
          trial.set_stage(steps[k].stage);
          trial.set_label(config);
          trial.set_collect_ranges(steps[k].collect_ranges);
          trial.mutable_finetune()->set_steps(steps[k].finetune_steps);
        }
        return step;
      }
      if (k < steps.size()) finished += steps[k].configs.size();
    }
    return absl::InternalError(
        absl::StrCat("fake: ", outcomes.size(), " outcomes match no step boundary"));
  }

 private:
  FakePlans* plans_;
};

// "fake" is the fake; every other name goes to the real registry.
inline std::function<absl::StatusOr<std::unique_ptr<Strategy>>(absl::string_view)>
FakeStrategyFactory(FakePlans* plans) {
  return [plans](absl::string_view name) -> absl::StatusOr<std::unique_ptr<Strategy>> {
    if (name == "fake") return std::make_unique<FakeStrategy>(plans);
    return MakeStrategy(name);
  };
}

// A result as a worker would report it, with two layers whose parts add up to the totals (as
// the engine's cost model sums them): conv1 holds 3/4 of the weight bits, fc1 the rest.
inline v1::TrialResult MakeResult(double top1, int64_t size_bits, double energy_pj = 100.0) {
  v1::TrialResult result;
  result.set_top1(top1);
  result.set_top5(std::min(1.0, top1 + 0.05));
  result.set_loss(0.5);
  result.set_samples(1000);
  result.set_size_bits(size_bits);
  result.set_peak_activation_bits(4096);
  result.set_activation_bits(8192);
  result.set_bops(size_bits * 10);
  result.set_macs(1000);
  result.set_energy_pj(energy_pj);
  result.set_hardware_profile("horowitz-45nm");
  result.set_wall_seconds(1.5);
  result.set_images_per_second(1000);
  result.set_engine_version("test");
  const int64_t conv_bits = size_bits * 3 / 4;
  v1::LayerResult* conv = result.add_layers();
  conv->set_name("conv1");
  conv->set_layer_class("conv");
  conv->mutable_weights()->set_format("fixed:8");
  conv->mutable_weights()->set_bits(8);
  conv->mutable_weights()->set_fractional_bits(5);
  conv->mutable_inputs()->set_format("fixed:8");
  conv->mutable_inputs()->set_bits(8);
  conv->mutable_inputs()->set_fractional_bits(4);
  conv->set_macs(600);
  conv->set_weight_count(100);
  conv->set_weight_bits(conv_bits);
  conv->set_activation_bits(4096);
  conv->set_bops(conv_bits * 10);
  conv->set_energy_pj(energy_pj / 2);
  v1::LayerResult* fc = result.add_layers();
  fc->set_name("fc1");
  fc->set_layer_class("fc");
  fc->mutable_weights()->set_format("int:8:asym:tensor");
  fc->mutable_weights()->set_bits(8);
  fc->mutable_weights()->add_scale(0.25f);
  fc->mutable_weights()->add_zero_point(3);
  fc->mutable_outputs()->set_format("pow2:4");
  fc->mutable_outputs()->set_bits(4);
  fc->mutable_outputs()->set_max_exponent(-1);
  fc->set_macs(400);
  fc->set_weight_count(50);
  fc->set_weight_bits(size_bits - conv_bits);
  fc->set_activation_bits(4096);
  fc->set_bops((size_bits - conv_bits) * 10);
  fc->set_energy_pj(energy_pj - energy_pj / 2);
  return result;
}

}  // namespace bitsweep::server::testing

#endif  // BITSWEEP_TESTS_COORDINATOR_TEST_UTIL_H_
