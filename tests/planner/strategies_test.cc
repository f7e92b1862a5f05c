// Tests for server/planner: every strategy driven to completion by a fake evaluator (a function
// from a config to a synthetic TrialResult: accuracy falls as widths shrink, with a sensitivity
// per layer and role; size is weight count x weight width), checking stage sequences, canonical
// configs, Ristretto's narrowest passing widths and retries, the sensitivity table and greedy
// walk, random sampling determinism, grid products, baseline failures and Validate messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/frontier/frontier.h"
#include "server/planner/strategy.h"
#include "quant/layer_info.h"
#include "quant/config.h"
#include "quant/cost_model.h"
#include "quant/format.h"

namespace bitsweep::server {
namespace {

namespace quant = ::bitsweep::quant;
using ::testing::HasSubstr;

// ---- the fake model and evaluator ------------------------------------------------------------

struct FakeLayer {
  std::string name;
  std::string layer_class;  // "conv" | "fc"
  int64_t weight_count;
  int64_t macs;
  int64_t activation_elements;
  double weight_sensitivity;      // top-1 lost at 8 bits (see Penalty)
  double activation_sensitivity;
  int64_t fan_in = 150;
};

// Relative accuracy loss of a width: none at 16 bits and above, 1 at 8, 2 at 6, 4 at 4, 8 at 2.
double Penalty(int bits) { return bits >= 16 ? 0.0 : std::pow(2.0, (8 - bits) / 2.0); }

struct FakeModel {
  std::vector<FakeLayer> layers;
  double baseline_top1 = 0.90;

  std::vector<quant::LayerInfo> Infos() const {
    std::vector<quant::LayerInfo> infos;
    for (const FakeLayer& l : layers) {
      quant::LayerInfo info;
      info.name = l.name;
      info.layer_class = l.layer_class == "conv" ? quant::LayerClass::kConv : quant::LayerClass::kFc;
      info.weight_count = l.weight_count;
      info.macs = l.macs;
      info.fan_in = l.fan_in;
      info.input_shape = {l.activation_elements / 2};
      info.output_shape = {l.activation_elements - l.activation_elements / 2};
      infos.push_back(info);
    }
    return infos;
  }

  // Accuracy drops add up over layers and roles (inputs and outputs each count half).
  v1::TrialResult Evaluate(const v1::TrialSpec& trial) const {
    absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(trial.config_json());
    EXPECT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::vector<quant::LayerFormats>> formats =
        quant::ResolveFormats(*config, Infos());
    EXPECT_TRUE(formats.ok()) << formats.status();
    v1::TrialResult r;
    double drop = 0;
    int64_t size = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      const FakeLayer& l = layers[i];
      const quant::LayerFormats& f = (*formats)[i];
      drop += l.weight_sensitivity * Penalty(f.weights.bits);
      drop += l.activation_sensitivity * (Penalty(f.inputs.bits) + Penalty(f.outputs.bits)) / 2;
      size += l.weight_count * f.weights.bits;
      v1::LayerResult* lr = r.add_layers();
      lr->set_name(l.name);
      lr->set_layer_class(l.layer_class);
      lr->set_weight_count(l.weight_count);
      lr->set_macs(l.macs);
      lr->set_activation_bits(l.activation_elements * (f.inputs.bits + f.outputs.bits) / 2);
      lr->set_fan_in(l.fan_in);
    }
    r.set_energy_pj(
        quant::EstimateCost(Infos(), *formats, quant::DefaultHardwareProfile()).total.energy_pj);
    if (trial.finetune().steps() > 0) {
      r.set_top1_before_finetune(baseline_top1 - drop);
      drop /= 2;  // fine-tuning recovers half
    }
    r.set_top1(baseline_top1 - drop);
    r.set_size_bits(size);
    r.set_loss(kBaselineLoss + kNatsPerDrop * drop);
    if (trial.collect_sensitivities()) {
      // What a worker's Hessian trial reports: here the true single-layer losses, which add up.
      for (size_t i = 0; i < layers.size(); ++i) {
        v1::LayerResult* lr = r.mutable_layers(static_cast<int>(i));
        // A trace lost in its noise: the Hessian prediction (here garbage, 0) must be ignored.
        const bool unreliable = layers[i].name == unreliable_trace_layer;
        lr->set_hessian_trace(unreliable ? -1.0 : 1.0);
        lr->set_hessian_trace_stderr(0.1);
        for (const std::string& f : trial.sensitivity_weight_formats()) {
          v1::FormatSensitivity* s = lr->add_weight_sensitivities();
          s->set_format(f);
          const double truth = kNatsPerDrop * layers[i].weight_sensitivity *
                               Penalty(quant::ParseFormat(f)->bits);
          s->set_loss_increase(unreliable ? 0.0 : truth);
          s->set_measured_loss_increase(truth);
        }
        for (const std::string& f : trial.sensitivity_activation_formats()) {
          v1::FormatSensitivity* s = lr->add_activation_sensitivities();
          s->set_format(f);
          s->set_loss_increase(kNatsPerDrop * layers[i].activation_sensitivity *
                               Penalty(quant::ParseFormat(f)->bits));
          s->set_measured_loss_increase(s->loss_increase());
        }
      }
    }
    return r;
  }

  static constexpr double kBaselineLoss = 0.3, kNatsPerDrop = 2.5;
  std::string unreliable_trace_layer;
};

FakeModel LeNetLike() {
  return {{{"conv1", "conv", 500, 300000, 4000, 0.0005, 0.0005},
           {"conv2", "conv", 25000, 1600000, 2400, 0.0005, 0.0002},
           {"fc1", "fc", 40000, 40000, 900, 0.0002, 0.0001},
           {"fc2", "fc", 1000, 1000, 110, 0.0010, 0.0002}}};
}

// ---- the driver ------------------------------------------------------------------------------

struct Sweep {
  std::vector<PlanStep> steps;           // every step, the final done/failure one included
  std::vector<TrialOutcome> outcomes;
  const PlanStep& last() const { return steps.back(); }
  std::vector<std::string> StepStages() const {
    std::vector<std::string> stages;
    for (const PlanStep& s : steps) {
      if (!s.done && s.failure.empty()) stages.push_back(s.stage);
    }
    return stages;
  }
  std::vector<const TrialOutcome*> OfStage(const std::string& stage) const {
    std::vector<const TrialOutcome*> found;
    for (const TrialOutcome& o : outcomes) {
      if (o.spec.stage() == stage) found.push_back(&o);
    }
    return found;
  }
};

using FailWhen = std::function<bool(const v1::TrialSpec&)>;

void ExpectCanonical(const v1::TrialSpec& trial) {
  absl::StatusOr<quant::QuantConfig> parsed = quant::ParseQuantConfig(trial.config_json());
  ASSERT_TRUE(parsed.ok()) << trial.config_json() << ": " << parsed.status();
  EXPECT_EQ(quant::CanonicalJson(*parsed), trial.config_json());
  EXPECT_FALSE(trial.stage().empty());
  EXPECT_FALSE(trial.label().empty()) << trial.config_json();
}

Sweep RunSweep(const Strategy& strategy, const v1::SweepSpec& spec, const FakeModel& model,
          FailWhen fail = nullptr) {
  Sweep sweep;
  for (int guard = 0; guard < 50; ++guard) {
    absl::StatusOr<PlanStep> step = strategy.Next(spec, sweep.outcomes);
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok()) return sweep;
    // Stateless: asking again with the same outcomes gives the same step.
    absl::StatusOr<PlanStep> again = strategy.Next(spec, sweep.outcomes);
    EXPECT_TRUE(again.ok());
    EXPECT_EQ(again->trials.size(), step->trials.size());
    for (size_t i = 0; i < std::min(again->trials.size(), step->trials.size()); ++i) {
      EXPECT_EQ(again->trials[i].SerializeAsString(), step->trials[i].SerializeAsString());
    }
    sweep.steps.push_back(*step);
    if (step->done || !step->failure.empty()) return sweep;
    EXPECT_FALSE(step->trials.empty()) << "a step that is not done holds trials";
    EXPECT_FALSE(step->stage.empty());
    for (const v1::TrialSpec& trial : step->trials) {
      ExpectCanonical(trial);
      TrialOutcome o;
      o.trial_id = static_cast<int64_t>(sweep.outcomes.size()) + 1;
      o.spec = trial;
      if (fail && fail(trial)) {
        o.error = "boom";
      } else {
        o.succeeded = true;
        o.result = model.Evaluate(trial);
      }
      sweep.outcomes.push_back(o);
      if (std::getenv("BITSWEEP_PRINT_TRIALS") != nullptr) {  // for people debugging a strategy
        std::printf("%-12s %-70s top1 %.4f size %lld\n", trial.stage().c_str(),
                    trial.label().c_str(), o.result.top1(),
                    static_cast<long long>(o.result.size_bits()));
      }
    }
  }
  ADD_FAILURE() << "the strategy never finished";
  return sweep;
}

std::unique_ptr<Strategy> Make(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Strategy>> s = MakeStrategy(name);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

v1::SweepSpec Spec(const std::string& strategy) {
  v1::SweepSpec spec;
  spec.set_strategy(strategy);
  spec.set_model_hash("abc");
  return spec;
}

// Candidates 16/8/4/2 for weights and activations (Ristretto's widths, the defaults before
// DefaultWeightFormats): the fake's numbers in the tests below are worked out for them.
v1::SweepSpec PaperSpec(const std::string& strategy) {
  v1::SweepSpec spec = Spec(strategy);
  for (const char* f : {"fixed:16", "fixed:8", "fixed:4", "fixed:2"}) {
    spec.mutable_space()->add_weight_formats(f);
    spec.mutable_space()->add_activation_formats(f);
  }
  return spec;
}

std::string ExpectedCanonical(const std::string& json) {
  return quant::CanonicalJson(*quant::ParseQuantConfig(json));
}

// ---- registry and shared behaviour -----------------------------------------------------------

TEST(Registry, NamesAndUnknown) {
  EXPECT_EQ(StrategyNames(),
            (std::vector<std::string>{"grid", "ristretto", "sensitivity", "hawq", "hawq-table",
                                      "random", "evolutionary"}));
  for (const std::string& name : StrategyNames()) EXPECT_TRUE(MakeStrategy(name).ok()) << name;
  absl::StatusOr<std::unique_ptr<Strategy>> bad = MakeStrategy("annealing");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("annealing"));
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("grid, ristretto, sensitivity, hawq, hawq-table, random, evolutionary"));
}

v1::SweepSpec ValidSpec(const std::string& strategy) {
  v1::SweepSpec spec = Spec(strategy);
  if (strategy == "grid") {
    v1::GridAxis* axis = spec.mutable_space()->add_axes();
    axis->set_selector("conv");
    axis->set_role("weights");
    axis->add_formats("fixed:8");
  }
  return spec;
}

TEST(AllStrategies, StartWithTheBaselineAndFailWhenItFails) {
  for (const std::string& name : StrategyNames()) {
    SCOPED_TRACE(name);
    auto strategy = Make(name);
    const v1::SweepSpec spec = ValidSpec(name);
    EXPECT_TRUE(strategy->Validate(spec).ok()) << strategy->Validate(spec);
    absl::StatusOr<PlanStep> first = strategy->Next(spec, {});
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->stage, "baseline");
    ASSERT_EQ(first->trials.size(), 1u);
    EXPECT_EQ(first->trials[0].stage(), "baseline");
    EXPECT_EQ(first->trials[0].label(), "fp32 baseline");
    EXPECT_TRUE(first->trials[0].collect_ranges());
    EXPECT_EQ(first->trials[0].config_json(), ExpectedCanonical("{}"));
    EXPECT_EQ(first->trials[0].finetune().steps(), 0);

    const Sweep failed = RunSweep(*strategy, spec, LeNetLike(), [](const v1::TrialSpec& t) {
      return t.stage() == "baseline";
    });
    EXPECT_EQ(failed.last().failure, "baseline failed: boom");
    EXPECT_FALSE(failed.last().done);
    EXPECT_EQ(failed.outcomes.size(), 1u);

    const Sweep empty = RunSweep(*strategy, spec, FakeModel{});
    EXPECT_THAT(empty.last().failure, HasSubstr("no quantizable layers"));
  }
}

TEST(AllStrategies, ValidateNamesTheField) {
  struct Case {
    std::string strategy;
    std::function<void(v1::SweepSpec&)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"ristretto", [](v1::SweepSpec& s) { s.mutable_space()->add_weight_formats("fixed:8");
                                           s.mutable_space()->add_weight_formats("fixd:4"); },
       "space.weight_formats[1]"},
      {"ristretto", [](v1::SweepSpec& s) { s.mutable_space()->add_weight_formats("fixed:0"); },
       "space.weight_formats[0]"},
      {"sensitivity", [](v1::SweepSpec& s) { s.mutable_space()->add_activation_formats("pow2:4"); },
       "space.activation_formats[0]"},
      {"random", [](v1::SweepSpec& s) { s.mutable_space()->add_activation_formats("int:8:sym:channel"); },
       "space.activation_formats[0]"},
      {"random", [](v1::SweepSpec& s) { s.mutable_space()->add_weight_formats("fixed:8:3"); },
       "space.weight_formats[0]"},
      {"ristretto", [](v1::SweepSpec& s) { s.set_error_margin(-1); }, "error_margin"},
      {"sensitivity", [](v1::SweepSpec& s) { s.mutable_finetune()->set_steps(-5); }, "finetune.steps"},
      {"random", [](v1::SweepSpec& s) { s.set_budget(-1); }, "budget"},
      {"evolutionary", [](v1::SweepSpec& s) { s.set_budget(20000); }, "budget"},
      {"evolutionary", [](v1::SweepSpec& s) { s.set_population(1); }, "population"},
      {"evolutionary", [](v1::SweepSpec& s) { s.set_population(5000); }, "population"},
      {"evolutionary", [](v1::SweepSpec& s) { s.add_objectives(v1::OBJECTIVE_TOP1);
                                              s.add_objectives(v1::OBJECTIVE_TOP1); },
       "objectives[1]"},
      {"evolutionary", [](v1::SweepSpec& s) { s.mutable_space()->add_weight_formats("fixd:4"); },
       "space.weight_formats[0]"},
      {"ristretto", [](v1::SweepSpec& s) { s.mutable_space()->add_axes()->set_selector("conv"); },
       "space.axes"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->clear_axes(); }, "space.axes"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->mutable_axes(0)->set_selector("convs"); },
       "space.axes[0].selector"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->mutable_axes(0)->set_selector("layers."); },
       "space.axes[0].selector"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->mutable_axes(0)->set_role("bias"); },
       "space.axes[0].role"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->mutable_axes(0)->clear_formats(); },
       "space.axes[0].formats"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->mutable_axes(0)->add_formats("minifloat:0:3"); },
       "space.axes[0].formats[1]"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->mutable_axes(0)->add_formats("fixed:8"); },
       "space.axes[0].formats[1]"},
      {"grid", [](v1::SweepSpec& s) {
         v1::GridAxis* a = s.mutable_space()->add_axes();
         a->set_selector("default");
         a->set_role("activations");
         a->add_formats("fixed:8");
         a->add_formats("pow2:4");
       }, "space.axes[1].formats[1]"},
      {"grid", [](v1::SweepSpec& s) {
         v1::GridAxis* a = s.mutable_space()->add_axes();
         a->set_selector("conv");
         a->set_role("weights");
         a->add_formats("fixed:4");
       }, "space.axes[1]"},
      {"grid", [](v1::SweepSpec& s) { s.mutable_space()->add_weight_formats("fixed:8"); },
       "space.weight_formats"},
  };
  for (const Case& c : cases) {
    v1::SweepSpec spec = ValidSpec(c.strategy);
    c.edit(spec);
    absl::Status status = Make(c.strategy)->Validate(spec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.field + ":")) << status;
  }
  // pow2 is fine for weights, and per-channel int too.
  v1::SweepSpec spec = ValidSpec("sensitivity");
  spec.mutable_space()->add_weight_formats("pow2:4");
  spec.mutable_space()->add_weight_formats("int:8:sym:channel");
  spec.mutable_space()->add_activation_formats("minifloat:4:3");
  EXPECT_TRUE(Make("sensitivity")->Validate(spec).ok());
}

// ---- grid ------------------------------------------------------------------------------------

v1::GridAxis* AddAxis(v1::SweepSpec& spec, const std::string& selector, const std::string& role,
                      std::vector<std::string> formats) {
  v1::GridAxis* axis = spec.mutable_space()->add_axes();
  axis->set_selector(selector);
  axis->set_role(role);
  for (const std::string& f : formats) axis->add_formats(f);
  return axis;
}

TEST(Grid, CartesianProduct) {
  v1::SweepSpec spec = Spec("grid");
  AddAxis(spec, "conv", "weights", {"fixed:8", "fixed:4"});
  AddAxis(spec, "default", "activations", {"fixed:16", "fixed:8", "int:8"});
  AddAxis(spec, "layers.fc2", "weights", {"pow2:4", "minifloat:4:3"});
  auto grid = Make("grid");
  ASSERT_TRUE(grid->Validate(spec).ok()) << grid->Validate(spec);
  const Sweep sweep = RunSweep(*grid, spec, LeNetLike());
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(), (std::vector<std::string>{"baseline", "grid"}));
  const auto trials = sweep.OfStage("grid");
  ASSERT_EQ(trials.size(), 2u * 3u * 2u);
  std::set<std::string> configs;
  for (const TrialOutcome* t : trials) configs.insert(t->spec.config_json());
  EXPECT_EQ(configs.size(), trials.size());
  EXPECT_EQ(trials[0]->spec.config_json(),
            ExpectedCanonical(R"({"conv": {"weights": "fixed:8"},
                                  "default": {"inputs": "fixed:16", "outputs": "fixed:16"},
                                  "layers": {"fc2": {"weights": "pow2:4"}}})"));
  EXPECT_EQ(trials[0]->spec.label(),
            "conv weights fixed:8, default activations fixed:16, layers.fc2 weights pow2:4");
  EXPECT_EQ(trials.back()->spec.config_json(),
            ExpectedCanonical(R"({"conv": {"weights": "fixed:4"},
                                  "default": {"inputs": "int:8", "outputs": "int:8"},
                                  "layers": {"fc2": {"weights": "minifloat:4:3"}}})"));
}

TEST(Grid, RefusesHugeProducts) {
  v1::SweepSpec spec = Spec("grid");
  for (const char* selector : {"default", "conv", "fc"}) {
    std::vector<std::string> formats;
    for (int bits = 2; bits <= 32; ++bits) formats.push_back("fixed:" + std::to_string(bits));
    AddAxis(spec, selector, "weights", formats);  // 31^3 combinations
  }
  absl::Status status = Make("grid")->Validate(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("random strategy"));
}

TEST(Grid, UnknownLayerFailsTheSweepNamingIt) {
  v1::SweepSpec spec = Spec("grid");
  AddAxis(spec, "conv", "weights", {"fixed:8"});
  AddAxis(spec, "layers.conv9", "outputs", {"fixed:8"});
  auto grid = Make("grid");
  ASSERT_TRUE(grid->Validate(spec).ok());
  const Sweep sweep = RunSweep(*grid, spec, LeNetLike());
  EXPECT_THAT(sweep.last().failure, HasSubstr("'conv9'"));
  EXPECT_THAT(sweep.last().failure, HasSubstr("space.axes[1]"));
  EXPECT_THAT(sweep.last().failure, HasSubstr("conv1, conv2, fc1, fc2"));
}

// ---- ristretto -------------------------------------------------------------------------------

// Three-layer model whose group drops are set directly: each group's drop at 8 bits.
FakeModel GroupModel(double conv_drop, double fc_drop, double act_drop, bool with_fc = true) {
  FakeModel m;
  m.layers.push_back({"conv1", "conv", 1000, 100000, 1000, conv_drop / 2, act_drop / 3});
  m.layers.push_back({"conv2", "conv", 3000, 200000, 1000, conv_drop / 2, act_drop / 3});
  if (with_fc) {
    m.layers.push_back({"fc1", "fc", 20000, 20000, 100, fc_drop, act_drop / 3});
  } else {
    m.layers[0].activation_sensitivity = m.layers[1].activation_sensitivity = act_drop / 2;
  }
  return m;
}

quant::QuantConfig ParsedConfig(const TrialOutcome& o) {
  return *quant::ParseQuantConfig(o.spec.config_json());
}

std::string Fmt(const std::optional<quant::NumberFormat>& f) {
  return f ? quant::FormatToString(*f) : "fp32";
}

TEST(Ristretto, WidthSweepsThenNarrowestPassingCombination) {
  // Own drops (margin 1 pp): conv 0.0005 x {1,4,8} at 8/4/2 bits -> fixed:2 passes (0.004);
  // fc 0.003 at 8 bits, 0.012 at 4 -> fixed:8; activations 0.0002 -> fixed:2 (0.0016).
  // Sum 0.0086 < 0.01: the first combination passes.
  const FakeModel model = GroupModel(0.0005, 0.003, 0.0002);
  v1::SweepSpec spec = PaperSpec("ristretto");
  auto ristretto = Make("ristretto");
  const Sweep sweep = RunSweep(*ristretto, spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(),
            (std::vector<std::string>{"baseline", "width_sweeps", "combined"}));
  EXPECT_EQ(sweep.OfStage("conv_weights").size(), 4u);
  EXPECT_EQ(sweep.OfStage("fc_weights").size(), 4u);
  EXPECT_EQ(sweep.OfStage("activations").size(), 4u);
  EXPECT_EQ(sweep.OfStage("conv_weights")[0]->spec.label(), "conv weights fixed:16");
  EXPECT_EQ(sweep.OfStage("activations")[3]->spec.label(), "activations fixed:2");
  EXPECT_EQ(sweep.OfStage("fc_weights")[2]->spec.config_json(),
            ExpectedCanonical(R"({"fc": {"weights": "fixed:4"}})"));
  EXPECT_EQ(sweep.OfStage("activations")[1]->spec.config_json(),
            ExpectedCanonical(R"({"default": {"inputs": "fixed:8", "outputs": "fixed:8"}})"));

  const auto combined = sweep.OfStage("combined");
  ASSERT_EQ(combined.size(), 1u);
  EXPECT_EQ(combined[0]->spec.config_json(),
            ExpectedCanonical(R"({"conv": {"weights": "fixed:2"}, "fc": {"weights": "fixed:8"},
                                  "default": {"inputs": "fixed:2", "outputs": "fixed:2"}})"));
  EXPECT_EQ(combined[0]->spec.label(), "combined: conv w fixed:2, fc w fixed:8, act fixed:2");
  EXPECT_TRUE(sweep.OfStage("finetune").empty()) << "finetune.steps == 0";
}

TEST(Ristretto, WidensTheWorstGroupUntilTheCombinationPasses) {
  // conv fixed:2 alone loses 0.008 (passes), fc fixed:8 0.003, act fixed:2 0.0016: together
  // 0.0126 > 0.01. conv lost the most on its own -> widened to fixed:4 (0.004): 0.0086 passes.
  const FakeModel model = GroupModel(0.001, 0.003, 0.0002);
  v1::SweepSpec spec = PaperSpec("ristretto");
  spec.mutable_finetune()->set_steps(100);
  spec.mutable_finetune()->set_learning_rate(0.01);
  const Sweep sweep = RunSweep(*Make("ristretto"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(), (std::vector<std::string>{"baseline", "width_sweeps", "combined",
                                                          "combined", "finetune"}));
  const auto combined = sweep.OfStage("combined");
  ASSERT_EQ(combined.size(), 2u);
  EXPECT_LT(combined[0]->result.top1(), model.baseline_top1 - 0.01);
  const quant::QuantConfig retry = ParsedConfig(*combined[1]);
  EXPECT_EQ(Fmt(retry.conv.weights), "fixed:4");
  EXPECT_EQ(Fmt(retry.fc.weights), "fixed:8");
  EXPECT_EQ(Fmt(retry.default_formats.inputs), "fixed:2");
  EXPECT_THAT(combined[1]->spec.label(), HasSubstr("retry 1"));
  EXPECT_THAT(combined[1]->spec.label(), HasSubstr("widened conv w to fixed:4"));
  EXPECT_GE(combined[1]->result.top1(), model.baseline_top1 - 0.01);

  const auto tuned = sweep.OfStage("finetune");
  ASSERT_EQ(tuned.size(), 1u);
  EXPECT_EQ(tuned[0]->spec.config_json(), combined[1]->spec.config_json());
  EXPECT_EQ(tuned[0]->spec.finetune().steps(), 100);
  EXPECT_DOUBLE_EQ(tuned[0]->spec.finetune().learning_rate(), 0.01);
  EXPECT_THAT(tuned[0]->spec.label(), HasSubstr("finetune"));
  // No other trial fine-tunes.
  for (const TrialOutcome& o : sweep.outcomes) {
    if (o.spec.stage() != "finetune") {
      EXPECT_EQ(o.spec.finetune().steps(), 0) << o.spec.label();
    }
  }
}

TEST(Ristretto, StopsWideningAtTheWidestPassingCandidates) {
  // Only fixed:8 and fixed:4 offered; each group passes at 8 bits alone (0.004) but not together
  // (0.012), and no group can widen: one combination, then fine-tuning of it.
  const FakeModel model = GroupModel(0.004, 0.004, 0.004);
  v1::SweepSpec spec = Spec("ristretto");
  for (auto* list : {spec.mutable_space()->mutable_weight_formats(),
                     spec.mutable_space()->mutable_activation_formats()}) {
    list->Add("fixed:4");  // narrowest first: the planner orders them itself
    list->Add("fixed:8");
  }
  spec.mutable_finetune()->set_steps(10);
  const Sweep sweep = RunSweep(*Make("ristretto"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(),
            (std::vector<std::string>{"baseline", "width_sweeps", "combined", "finetune"}));
  EXPECT_EQ(sweep.OfStage("conv_weights")[0]->spec.label(), "conv weights fixed:8");
  const auto combined = sweep.OfStage("combined");
  ASSERT_EQ(combined.size(), 1u);
  EXPECT_EQ(combined[0]->spec.label(), "combined: conv w fixed:8, fc w fixed:8, act fixed:8");
  EXPECT_EQ(sweep.OfStage("finetune")[0]->spec.config_json(), combined[0]->spec.config_json());
}

TEST(Ristretto, GroupWithoutPassingWidthStaysFp32AndNoFcStageWithoutFc) {
  // Activations fail at every width below 16 bits... and fixed:16 is not offered.
  const FakeModel model = GroupModel(0.001, 0, 0.05, /*with_fc=*/false);
  v1::SweepSpec spec = Spec("ristretto");
  for (const char* f : {"fixed:8", "fixed:4", "fixed:2"}) {
    spec.mutable_space()->add_weight_formats(f);
    spec.mutable_space()->add_activation_formats(f);
  }
  const Sweep sweep = RunSweep(*Make("ristretto"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_TRUE(sweep.OfStage("fc_weights").empty());
  EXPECT_EQ(sweep.OfStage("conv_weights").size(), 3u);
  const auto combined = sweep.OfStage("combined");
  ASSERT_EQ(combined.size(), 1u);
  EXPECT_EQ(combined[0]->spec.label(), "combined: conv w fixed:2, act fp32");
  EXPECT_EQ(combined[0]->spec.config_json(), ExpectedCanonical(R"({"conv": {"weights": "fixed:2"}})"));
}

TEST(Ristretto, NothingPassingEndsAfterTheWidthSweeps) {
  const FakeModel model = GroupModel(0.05, 0.05, 0.05);
  v1::SweepSpec spec = Spec("ristretto");
  spec.set_error_margin(0.5);
  spec.mutable_space()->add_weight_formats("fixed:4");
  spec.mutable_space()->add_activation_formats("fixed:4");
  spec.mutable_finetune()->set_steps(10);
  const Sweep sweep = RunSweep(*Make("ristretto"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(), (std::vector<std::string>{"baseline", "width_sweeps"}));
  EXPECT_EQ(sweep.outcomes.size(), 4u);  // baseline + one candidate per group
}

TEST(Ristretto, FailedSweepTrialsCountAsNotPassing) {
  const FakeModel model = GroupModel(0.0005, 0.003, 0.0002);
  const Sweep sweep = RunSweep(*Make("ristretto"), PaperSpec("ristretto"), model, [](const v1::TrialSpec& t) {
    return t.label() == "conv weights fixed:2";
  });
  const auto combined = sweep.OfStage("combined");
  ASSERT_FALSE(combined.empty());
  EXPECT_EQ(Fmt(ParsedConfig(*combined[0]).conv.weights), "fixed:4");
}

TEST(Ristretto, FailedCombinationIsRetriedWider) {
  // The first combination (conv fixed:2, fc fixed:8, act fixed:2) would pass, but its trial
  // fails on the worker: it counts as missing the margin and conv, which lost the most on its
  // own, is widened.
  const FakeModel model = GroupModel(0.0005, 0.003, 0.0002);
  const Sweep sweep = RunSweep(*Make("ristretto"), PaperSpec("ristretto"), model,
                               [](const v1::TrialSpec& t) {
                                 return t.label().rfind("combined: ", 0) == 0;
                               });
  EXPECT_TRUE(sweep.last().done);
  const auto combined = sweep.OfStage("combined");
  ASSERT_EQ(combined.size(), 2u);
  EXPECT_FALSE(combined[0]->succeeded);
  EXPECT_EQ(combined[1]->spec.label(),
            "combined retry 1 (widened conv w to fixed:4): conv w fixed:4, fc w fixed:8, act fixed:2");
}

// ---- sensitivity -----------------------------------------------------------------------------

TEST(Sensitivity, TableGreedyAndFinetune) {
  const FakeModel model = LeNetLike();
  v1::SweepSpec spec = PaperSpec("sensitivity");
  spec.mutable_finetune()->set_steps(50);
  const Sweep sweep = RunSweep(*Make("sensitivity"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(),
            (std::vector<std::string>{"baseline", "sensitivity", "greedy", "finetune"}));

  const auto table = sweep.OfStage("sensitivity");
  EXPECT_EQ(table.size(), model.layers.size() * (4 + 4));
  EXPECT_EQ(table[0]->spec.label(), "conv1 weights fixed:16");
  EXPECT_EQ(table[0]->spec.config_json(),
            ExpectedCanonical(R"({"layers": {"conv1": {"weights": "fixed:16"}}})"));
  EXPECT_EQ(table[4]->spec.config_json(),
            ExpectedCanonical(
                R"({"layers": {"conv1": {"inputs": "fixed:16", "outputs": "fixed:16"}}})"));
  std::set<std::string> configs;
  for (const TrialOutcome* t : table) configs.insert(t->spec.config_json());
  EXPECT_EQ(configs.size(), table.size());

  const auto greedy = sweep.OfStage("greedy");
  ASSERT_FALSE(greedy.empty());
  EXPECT_LE(greedy.size(), table.size());
  // The walk went past the margin (3 margins are allowed) and stopped there.
  EXPECT_LT(greedy.back()->result.top1(), model.baseline_top1 - 0.01);
  // The cheapest first move: fc1's 40000 weights to 16 bits cost nothing and save the most.
  EXPECT_THAT(greedy[0]->spec.label(), HasSubstr("greedy step 1: fc1 weights fixed:16"));
  EXPECT_EQ(greedy[0]->spec.config_json(),
            ExpectedCanonical(R"({"layers": {"fc1": {"weights": "fixed:16"}}})"));
  // Cumulative: each config lowers exactly one (layer, role) one step below the previous one,
  // so sizes never grow and accuracy falls as the walk goes on.
  auto width = [](const std::optional<quant::NumberFormat>& f) { return f ? f->bits : 32; };
  for (size_t i = 1; i < greedy.size(); ++i) {
    EXPECT_LE(greedy[i]->result.size_bits(), greedy[i - 1]->result.size_bits());
    EXPECT_LE(greedy[i]->result.top1(), greedy[i - 1]->result.top1() + 1e-12);
    const quant::QuantConfig prev = ParsedConfig(*greedy[i - 1]);
    const quant::QuantConfig now = ParsedConfig(*greedy[i]);
    int changed = 0;
    for (const FakeLayer& l : model.layers) {
      const quant::RoleFormats none;
      const auto& p = prev.layers.count(l.name) ? prev.layers.at(l.name) : none;
      const auto& n = now.layers.count(l.name) ? now.layers.at(l.name) : none;
      EXPECT_LE(width(n.weights), width(p.weights));
      EXPECT_LE(width(n.inputs), width(p.inputs));
      EXPECT_EQ(width(n.inputs), width(n.outputs));
      changed += width(n.weights) != width(p.weights);
      changed += width(n.inputs) != width(p.inputs);
    }
    EXPECT_EQ(changed, 1) << greedy[i]->spec.label();
  }
  EXPECT_LT(greedy.back()->result.size_bits(), greedy[0]->result.size_bits());

  const auto tuned = sweep.OfStage("finetune");
  ASSERT_FALSE(tuned.empty());
  EXPECT_LE(tuned.size(), 4u);
  std::set<std::string> greedy_configs;
  for (const TrialOutcome* g : greedy) greedy_configs.insert(g->spec.config_json());
  // The smallest configs of the greedy frontier, smallest first: the first is the smallest
  // greedy result (of equal sizes, the most accurate).
  const TrialOutcome* smallest = *std::min_element(
      greedy.begin(), greedy.end(), [](const TrialOutcome* a, const TrialOutcome* b) {
        if (a->result.size_bits() != b->result.size_bits()) {
          return a->result.size_bits() < b->result.size_bits();
        }
        return a->result.top1() > b->result.top1();
      });
  EXPECT_EQ(tuned[0]->spec.config_json(), smallest->spec.config_json());
  for (size_t i = 1; i < tuned.size(); ++i) {
    EXPECT_GT(tuned[i]->result.size_bits(), tuned[i - 1]->result.size_bits());
    EXPECT_GT(tuned[i]->result.top1_before_finetune(), tuned[i - 1]->result.top1_before_finetune());
  }
  for (const TrialOutcome* t : tuned) {
    EXPECT_TRUE(greedy_configs.count(t->spec.config_json())) << t->spec.label();
    EXPECT_EQ(t->spec.finetune().steps(), 50);
  }
}

TEST(AllStrategies, DefaultCandidatesAreEveryWidthFrom8Down) {
  // Weights 16 and 8..2, activations 16 and 8..4: the width a layer can afford is often 5 or 6.
  const Sweep sweep = RunSweep(*Make("sensitivity"), Spec("sensitivity"), LeNetLike());
  std::vector<int> weight_widths, activation_widths;
  for (const TrialOutcome* t : sweep.OfStage("sensitivity")) {
    const quant::QuantConfig config = ParsedConfig(*t);
    if (config.layers.begin()->first != "conv1") continue;
    const quant::RoleFormats& roles = config.layers.begin()->second;
    if (roles.weights) weight_widths.push_back(roles.weights->bits);
    if (roles.inputs) activation_widths.push_back(roles.inputs->bits);
  }
  EXPECT_EQ(weight_widths, (std::vector<int>{16, 8, 7, 6, 5, 4, 3, 2}));
  EXPECT_EQ(activation_widths, (std::vector<int>{16, 8, 7, 6, 5, 4}));
  EXPECT_EQ(DefaultWeightFormats().size(), 8u);
  EXPECT_EQ(DefaultActivationFormats().back(), "fixed:4");

  // ristretto sweeps the same candidates per group.
  const Sweep ristretto = RunSweep(*Make("ristretto"), Spec("ristretto"), LeNetLike());
  EXPECT_EQ(ristretto.OfStage("conv_weights").size(), 8u);
  EXPECT_EQ(ristretto.OfStage("activations").size(), 6u);
}

TEST(Sensitivity, NoFinetuneWithoutStepsAndCandidateCountsFollowTheSpace) {
  v1::SweepSpec spec = Spec("sensitivity");
  spec.mutable_space()->add_weight_formats("fixed:8");
  spec.mutable_space()->add_weight_formats("pow2:4");
  spec.mutable_space()->add_weight_formats("fixed:4");
  spec.mutable_space()->add_activation_formats("fixed:8");
  const Sweep sweep = RunSweep(*Make("sensitivity"), spec, LeNetLike());
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(), (std::vector<std::string>{"baseline", "sensitivity", "greedy"}));
  EXPECT_EQ(sweep.OfStage("sensitivity").size(), 4u * (3 + 1));
}

TEST(Sensitivity, StopsPastThreeMargins) {
  // Very sensitive layers: the walk must stop soon after the estimate passes 3 x 0.1 pp.
  FakeModel model = LeNetLike();
  for (FakeLayer& l : model.layers) {
    l.weight_sensitivity *= 20;
    l.activation_sensitivity *= 20;
  }
  v1::SweepSpec spec = Spec("sensitivity");
  spec.set_error_margin(0.1);
  const Sweep sweep = RunSweep(*Make("sensitivity"), spec, model);
  const auto greedy = sweep.OfStage("greedy");
  ASSERT_FALSE(greedy.empty());
  // Every step but the last stays within 3 margins of estimated (here: additive = true) drop.
  for (size_t i = 0; i + 1 < greedy.size(); ++i) {
    EXPECT_GE(greedy[i]->result.top1(), model.baseline_top1 - 0.003 - 1e-12);
  }
  EXPECT_LT(greedy.back()->result.top1(), model.baseline_top1 - 0.003);
}

// ---- hawq ------------------------------------------------------------------------------------

// The number after `key` in a hawq label (-1 and a failure when the key is missing).
double NumberAfter(const std::string& label, const std::string& key) {
  const size_t at = label.find(key);
  EXPECT_NE(at, std::string::npos) << key << " in " << label;
  if (at == std::string::npos) return -1;
  return std::atof(label.c_str() + at + key.size());
}

// "predicted top-1 89.12%", as a fraction.
double PredictedTop1(const std::string& label) {
  return NumberAfter(label, "predicted top-1 ") / 100.0;
}

// The number after "<= " in a hawq-table label: the predicted cost.
double PredictedCost(const std::string& label) { return NumberAfter(label, "<= "); }

TEST(HawqTable, DefaultTableThenExactFrontierThenFinetune) {
  const FakeModel model = LeNetLike();
  v1::SweepSpec spec = Spec("hawq-table");
  spec.mutable_finetune()->set_steps(50);
  const Sweep sweep = RunSweep(*Make("hawq-table"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(),
            (std::vector<std::string>{"baseline", "sensitivity", "hawq", "finetune"}));

  // The default candidates: weights 16, 8..2 (8 widths), activations 16, 8..4 (6 widths).
  const auto table = sweep.OfStage("sensitivity");
  EXPECT_EQ(table.size(), model.layers.size() * (8 + 6));
  std::set<int> weight_widths, activation_widths;
  for (const TrialOutcome* t : table) {
    const quant::RoleFormats& roles = ParsedConfig(*t).layers.begin()->second;
    if (roles.weights) weight_widths.insert(roles.weights->bits);
    if (roles.inputs) activation_widths.insert(roles.inputs->bits);
  }
  EXPECT_EQ(weight_widths, (std::set<int>{2, 3, 4, 5, 6, 7, 8, 16}));
  EXPECT_EQ(activation_widths, (std::set<int>{4, 5, 6, 7, 8, 16}));

  const auto hawq = sweep.OfStage("hawq");
  ASSERT_GE(hawq.size(), 10u);
  EXPECT_LE(hawq.size(), 24u);  // budget 0 means 24 configs
  std::set<std::string> configs;
  for (const TrialOutcome* o : hawq) {
    configs.insert(o->spec.config_json());
    // The fake's drops add up exactly, as the predictor assumes: prediction = measurement, and
    // the predicted cost is the measured size (no biases in the fake).
    EXPECT_NEAR(PredictedTop1(o->spec.label()), o->result.top1(), 1e-4) << o->spec.label();
    EXPECT_NEAR(PredictedCost(o->spec.label()), o->result.size_bits(), 0.5) << o->spec.label();
    EXPECT_THAT(o->spec.label(), HasSubstr("hawq size <= "));
    // Every layer has both roles quantized (no table trial failed).
    const quant::QuantConfig c = ParsedConfig(*o);
    EXPECT_EQ(c.layers.size(), model.layers.size());
  }
  EXPECT_EQ(configs.size(), hawq.size());
  // Some configs within the margin, some beyond it: the frontier spans the knee.
  const auto within = [&](const TrialOutcome* o) {
    return o->result.top1() >= model.baseline_top1 - 0.01;
  };
  EXPECT_TRUE(std::any_of(hawq.begin(), hawq.end(), within));
  EXPECT_FALSE(std::all_of(hawq.begin(), hawq.end(), within));

  const auto tuned = sweep.OfStage("finetune");
  ASSERT_FALSE(tuned.empty());
  EXPECT_LE(tuned.size(), 4u);
  for (const TrialOutcome* t : tuned) {
    EXPECT_TRUE(configs.count(t->spec.config_json())) << t->spec.label();
    EXPECT_EQ(t->spec.finetune().steps(), 50);
    // Within 2 margins before fine-tuning.
    EXPECT_GE(t->result.top1_before_finetune(), model.baseline_top1 - 0.02 - 1e-12);
  }
  for (size_t i = 1; i < tuned.size(); ++i) {
    EXPECT_GT(tuned[i]->result.size_bits(), tuned[i - 1]->result.size_bits());
  }
}

// Every config of the small space, evaluated by the fake: the brute-force reference.
std::vector<v1::TrialResult> EveryConfig(const FakeModel& model,
                                         const std::vector<std::string>& weights,
                                         const std::vector<std::string>& activations) {
  std::vector<v1::TrialResult> results;
  const size_t choices = weights.size() * activations.size();
  size_t total = 1;
  for (size_t i = 0; i < model.layers.size(); ++i) total *= choices;
  for (size_t code = 0; code < total; ++code) {
    std::string json = R"({"layers": {)";
    size_t rest = code;
    for (size_t i = 0; i < model.layers.size(); ++i) {
      const size_t pick = rest % choices;
      rest /= choices;
      const std::string& w = weights[pick / activations.size()];
      const std::string& a = activations[pick % activations.size()];
      json += (i ? ", " : "") + ("\"" + model.layers[i].name + "\": {\"weights\": \"" + w +
                                 "\", \"inputs\": \"" + a + "\", \"outputs\": \"" + a + "\"}");
    }
    v1::TrialSpec trial;
    trial.set_config_json(json + "}}");
    results.push_back(model.Evaluate(trial));
  }
  return results;
}

TEST(HawqTable, EachConfigIsTheBestWithinItsCostForSizeAndEnergyBudgets) {
  const FakeModel model = LeNetLike();
  const std::vector<std::string> weights = {"fixed:8", "fixed:4", "fixed:2"};
  const std::vector<std::string> activations = {"fixed:8", "fixed:5"};
  const std::vector<v1::TrialResult> all = EveryConfig(model, weights, activations);
  ASSERT_EQ(all.size(), 1296u);
  for (v1::Objective objective : {v1::OBJECTIVE_SIZE, v1::OBJECTIVE_ENERGY}) {
    SCOPED_TRACE(ObjectiveName(objective));
    v1::SweepSpec spec = Spec("hawq-table");
    for (const std::string& w : weights) spec.mutable_space()->add_weight_formats(w);
    for (const std::string& a : activations) spec.mutable_space()->add_activation_formats(a);
    spec.add_objectives(v1::OBJECTIVE_TOP1);
    spec.add_objectives(objective);
    spec.set_budget(40);
    const Sweep sweep = RunSweep(*Make("hawq-table"), spec, model);
    const auto hawq = sweep.OfStage("hawq");
    ASSERT_GE(hawq.size(), 10u);
    for (const TrialOutcome* o : hawq) {
      const double cost = ObjectiveValue(o->result, objective);
      // The planner priced the config as the cost model does on the worker.
      EXPECT_NEAR(PredictedCost(o->spec.label()), cost, 0.5 + 1e-9 * cost) << o->spec.label();
      EXPECT_THAT(o->spec.label(),
                  HasSubstr(absl::StrCat("hawq ", ObjectiveName(objective), " <= ")));
      // No config of the whole space costs as much or less and is more accurate.
      double best = 0;
      for (const v1::TrialResult& r : all) {
        if (ObjectiveValue(r, objective) <= cost * (1 + 1e-12)) best = std::max(best, r.top1());
      }
      EXPECT_NEAR(o->result.top1(), best, 1e-9) << o->spec.label();
    }
  }
}

TEST(HawqTable, FailedTableTrialsAreLeftOutAndARoleWithoutAnyStaysFp32) {
  const FakeModel model = LeNetLike();
  v1::SweepSpec spec = Spec("hawq-table");
  spec.set_budget(6);
  // fc2's activations fail at every width; conv1's weights fail at 2 bits.
  const Sweep sweep = RunSweep(*Make("hawq-table"), spec, model, [](const v1::TrialSpec& t) {
    return t.stage() == "sensitivity" &&
           (absl::StrContains(t.label(), "fc2 activations") || t.label() == "conv1 weights fixed:2");
  });
  EXPECT_TRUE(sweep.last().done);
  const auto hawq = sweep.OfStage("hawq");
  ASSERT_FALSE(hawq.empty());
  EXPECT_LE(hawq.size(), 6u);
  for (const TrialOutcome* o : hawq) {
    const quant::QuantConfig c = ParsedConfig(*o);
    ASSERT_TRUE(c.layers.count("fc2"));
    EXPECT_FALSE(c.layers.at("fc2").inputs.has_value()) << o->spec.label();
    EXPECT_THAT(o->spec.label(), HasSubstr("fc2 fp32"));
    EXPECT_NE(Fmt(c.layers.at("conv1").weights), "fixed:2");
  }
}

TEST(HawqTable, ValidateChecksTheBudgetAndTheHardwareProfile) {
  v1::SweepSpec spec = Spec("hawq-table");
  EXPECT_TRUE(Make("hawq-table")->Validate(spec).ok());
  spec.set_budget(20000);
  EXPECT_THAT(std::string(Make("hawq-table")->Validate(spec).message()), HasSubstr("budget"));
  spec.set_budget(0);
  spec.add_objectives(v1::OBJECTIVE_TOP1);
  spec.add_objectives(v1::OBJECTIVE_ENERGY);
  spec.mutable_settings()->set_hardware_profile_json(R"({"no_such_constant": 1})");
  const absl::Status bad = Make("hawq-table")->Validate(spec);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("settings.hardware_profile_json"));
  EXPECT_THAT(std::string(bad.message()), HasSubstr("no_such_constant"));
  spec.mutable_settings()->set_hardware_profile_json(R"({"dram_read_32bit_pj": 100})");
  EXPECT_TRUE(Make("hawq-table")->Validate(spec).ok());
}

// ---- hawq with Hessian sensitivities (the default) -------------------------------------------

// The cost after "; size " (or energy, BOPs) in a hawq label.
double LabelCost(const std::string& label, const std::string& objective) {
  return NumberAfter(label, "; " + objective + " ");
}

double LabelPredictedLoss(const std::string& label) {
  return NumberAfter(label, "predicted loss +");
}

// Each refinement round's configs lie inside the bracket of everything measured before it: above
// the largest predicted loss measured within `bracket` (a top-1 drop) and below the smallest
// measured beyond it. Returns the configs of the knapsack stages.
std::set<std::string> ExpectRoundsNarrowTheBracket(const Sweep& sweep, const FakeModel& model,
                                                  double bracket) {
  std::set<std::string> configs;
  std::vector<const TrialOutcome*> before = sweep.OfStage("hawq");
  for (const TrialOutcome* o : before) {
    EXPECT_THAT(o->spec.label(), ::testing::Not(HasSubstr("predicted top-1")));
  }
  for (const char* stage : {"hawq_refine", "hawq_refine_2"}) {
    double in = -1, out = 1e9;
    for (const TrialOutcome* o : before) {
      const double loss = LabelPredictedLoss(o->spec.label());
      if (o->result.top1() >= model.baseline_top1 - bracket - 1e-12) {
        in = std::max(in, loss);
      } else {
        out = std::min(out, loss);
      }
    }
    const auto round = sweep.OfStage(stage);
    EXPECT_FALSE(round.empty()) << stage;
    for (const TrialOutcome* o : round) {
      // The fake's loss is exactly proportional to its top-1 drop: the fit on the configs
      // measured before predicts this round's top-1.
      EXPECT_NEAR(PredictedTop1(o->spec.label()), o->result.top1(), 1e-4) << o->spec.label();
      const double loss = LabelPredictedLoss(o->spec.label());
      EXPECT_GT(loss, in) << stage << ": " << o->spec.label();
      EXPECT_LT(loss, out) << stage << ": " << o->spec.label();
    }
    before.insert(before.end(), round.begin(), round.end());
  }
  for (const TrialOutcome* o : before) {
    EXPECT_TRUE(configs.insert(o->spec.config_json()).second) << o->spec.label();
    // The default budget is energy; predicted cost = measured energy (the cost model on the
    // baseline's shapes); predicted loss = measured.
    EXPECT_NEAR(LabelCost(o->spec.label(), "energy"), o->result.energy_pj(), 0.5)
        << o->spec.label();
    EXPECT_NEAR(LabelPredictedLoss(o->spec.label()), o->result.loss() - 0.3, 1e-4)
        << o->spec.label();
  }
  return configs;
}

TEST(Hawq, OneSensitivityTrialThenRoundsOfKnapsackConfigs) {
  const FakeModel model = LeNetLike();
  const double margin = 0.01;
  v1::SweepSpec spec = Spec("hawq");
  spec.mutable_finetune()->set_steps(0);
  const Sweep sweep = RunSweep(*Make("hawq"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(), (std::vector<std::string>{"baseline", "hessian", "hawq",
                                                          "hawq_refine", "hawq_refine_2"}));
  // One trial gives every sensitivity: fp32 with the default candidates, and a config of its own
  // (a seed) so that the deduplication never serves it a plain fp32 result without them.
  const auto hessian = sweep.OfStage("hessian");
  ASSERT_EQ(hessian.size(), 1u);
  const v1::TrialSpec& h = hessian[0]->spec;
  EXPECT_TRUE(h.collect_sensitivities());
  EXPECT_EQ(h.sensitivity_weight_formats_size(), 8);
  EXPECT_EQ(h.sensitivity_activation_formats_size(), 6);
  const quant::QuantConfig hc = ParsedConfig(*hessian[0]);
  EXPECT_TRUE(hc.default_formats.empty() && hc.layers.empty());
  EXPECT_NE(hc.seed, 0u);
  EXPECT_NE(h.config_json(), sweep.OfStage("baseline")[0]->spec.config_json());

  const auto first = sweep.OfStage("hawq");
  EXPECT_GE(first.size(), 3u);
  EXPECT_LE(first.size(), 5u);
  // Without fine-tuning the rounds bracket the margin itself; the default budget is 11 configs.
  const std::set<std::string> configs = ExpectRoundsNarrowTheBracket(sweep, model, margin);
  EXPECT_LE(configs.size(), 11u);
  EXPECT_GT(configs.size(), 7u);
  // Within the margin, the refinement found a cheaper config than the first round.
  auto cheapest_within = [&](const std::vector<const TrialOutcome*>& os) {
    double best = 1e300;
    for (const TrialOutcome* o : os) {
      if (o->result.top1() >= model.baseline_top1 - margin) {
        best = std::min(best, o->result.energy_pj());
      }
    }
    return best;
  };
  std::vector<const TrialOutcome*> refined = sweep.OfStage("hawq_refine");
  for (const TrialOutcome* o : sweep.OfStage("hawq_refine_2")) refined.push_back(o);
  EXPECT_LT(cheapest_within(refined), cheapest_within(first));
}

// hawq's own default weight candidates: fixed:16 and asymmetric per-channel integers from 8 bits
// down to 2 (one trial predicts them all); its configs use them, and hawq-table (which measures
// every candidate layer by layer) keeps the fixed-point defaults of the other strategies. Its
// default budget is energy.
TEST(Hawq, DefaultsArePerChannelIntegersUnderAnEnergyBudget) {
  const std::vector<std::string> expected = {
      "fixed:16",           "int:8:asym:channel", "int:7:asym:channel", "int:6:asym:channel",
      "int:5:asym:channel", "int:4:asym:channel", "int:3:asym:channel", "int:2:asym:channel"};
  EXPECT_EQ(DefaultWeightFormatsFor("hawq"), expected);
  EXPECT_EQ(DefaultWeightFormatsFor("hawq-table"), DefaultWeightFormats());
  EXPECT_EQ(DefaultWeightFormatsFor("ristretto"), DefaultWeightFormats());

  const FakeModel model = LeNetLike();
  const Sweep sweep = RunSweep(*Make("hawq"), Spec("hawq"), model);
  EXPECT_TRUE(sweep.last().done);
  const auto hessian = sweep.OfStage("hessian");
  ASSERT_EQ(hessian.size(), 1u);
  EXPECT_EQ(std::vector<std::string>(hessian[0]->spec.sensitivity_weight_formats().begin(),
                                     hessian[0]->spec.sensitivity_weight_formats().end()),
            expected);
  EXPECT_EQ(hessian[0]->spec.sensitivity_activation_formats_size(), 6);
  // Every config's weights are one of the candidates, and the narrow ones are integers.
  int narrow = 0;
  for (const char* stage : {"hawq", "hawq_refine", "hawq_refine_2"}) {
    for (const TrialOutcome* o : sweep.OfStage(stage)) {
      for (const auto& [layer, roles] : ParsedConfig(*o).layers) {
        if (!roles.weights) continue;
        const std::string w = quant::FormatToString(*roles.weights);
        EXPECT_NE(std::find(expected.begin(), expected.end(), w), expected.end()) << w;
        if (roles.weights->bits <= 8) {
          EXPECT_EQ(roles.weights->kind, quant::FormatKind::kInt) << o->spec.label();
          ++narrow;
        }
      }
    }
  }
  EXPECT_GT(narrow, 0);
  // Without a cost objective hawq's budget is energy, which prices activations too: some config
  // narrows them below the widest candidate (under a size budget they would stay at 16 bits).
  int narrow_activations = 0;
  for (const char* stage : {"hawq", "hawq_refine", "hawq_refine_2"}) {
    for (const TrialOutcome* o : sweep.OfStage(stage)) {
      EXPECT_THAT(o->spec.label(), HasSubstr("; energy ")) << o->spec.label();
      for (const auto& [layer, roles] : ParsedConfig(*o).layers) {
        if (roles.inputs && roles.inputs->bits < 16) ++narrow_activations;
      }
    }
  }
  EXPECT_GT(narrow_activations, 0);
  v1::SweepSpec by_size = Spec("hawq");
  by_size.add_objectives(v1::OBJECTIVE_TOP1);
  by_size.add_objectives(v1::OBJECTIVE_SIZE);
  const Sweep sized = RunSweep(*Make("hawq"), by_size, model);
  ASSERT_FALSE(sized.OfStage("hawq").empty());
  for (const TrialOutcome* o : sized.OfStage("hawq")) {
    EXPECT_THAT(o->spec.label(), HasSubstr("; size ")) << o->spec.label();
  }
  // hawq-table's table measures the fixed-point defaults.
  const Sweep table = RunSweep(*Make("hawq-table"), Spec("hawq-table"), model);
  for (const TrialOutcome* o : table.OfStage("sensitivity")) {
    EXPECT_THAT(o->spec.config_json(), ::testing::Not(HasSubstr("int:"))) << o->spec.label();
  }
}

TEST(Hawq, TheSensitivityTrialDependsOnTheCandidatesAndItsFailureFailsTheSweep) {
  const FakeModel model = LeNetLike();
  auto hessian_trial = [&](const v1::SweepSpec& spec) {
    const Sweep sweep = RunSweep(*Make("hawq"), spec, model);
    const auto h = sweep.OfStage("hessian");
    EXPECT_EQ(h.size(), 1u);
    return h.empty() ? v1::TrialSpec() : h[0]->spec;
  };
  const v1::TrialSpec a = hessian_trial(Spec("hawq"));
  const v1::TrialSpec b = hessian_trial(Spec("hawq"));
  const v1::TrialSpec paper = hessian_trial(PaperSpec("hawq"));
  EXPECT_EQ(a.config_json(), b.config_json());
  EXPECT_NE(a.config_json(), paper.config_json());
  EXPECT_EQ(paper.sensitivity_weight_formats_size(), 4);

  const Sweep failed = RunSweep(*Make("hawq"), Spec("hawq"), model,
                                [](const v1::TrialSpec& t) { return t.stage() == "hessian"; });
  EXPECT_THAT(failed.last().failure, HasSubstr("sensitivities trial failed: boom"));
}

TEST(Hawq, ALayerWhoseTraceIsNotSignificantUsesItsMeasuredIncreases) {
  FakeModel model = LeNetLike();
  model.unreliable_trace_layer = "conv2";
  const Sweep sweep = RunSweep(*Make("hawq"), Spec("hawq"), model);
  EXPECT_TRUE(sweep.last().done);
  for (const char* stage : {"hawq", "hawq_refine", "hawq_refine_2"}) {
    for (const TrialOutcome* o : sweep.OfStage(stage)) {
      EXPECT_NEAR(LabelPredictedLoss(o->spec.label()), o->result.loss() - 0.3, 1e-4)
          << o->spec.label();
    }
  }
}

// hawq fine-tunes by default (1000 steps) within 13 trials; FinetuneSpec.steps = 0 turns it off
// and gives the 4 fine-tuning trials back to the knapsack rounds. The other strategies do not
// fine-tune unless asked.
TEST(Hawq, FineTunesByDefaultAndZeroStepsTurnsItOff) {
  const FakeModel model = LeNetLike();
  EXPECT_EQ(DefaultFinetuneStepsFor("hawq"), 1000);
  EXPECT_EQ(DefaultFinetuneStepsFor("hawq-table"), 0);
  EXPECT_EQ(DefaultFinetuneStepsFor("ristretto"), 0);
  EXPECT_EQ(EffectiveFinetune(Spec("hawq")).steps(), 1000);
  EXPECT_EQ(EffectiveFinetune(Spec("evolutionary")).steps(), 0);

  const Sweep tuned = RunSweep(*Make("hawq"), Spec("hawq"), model);
  EXPECT_TRUE(tuned.last().done);
  EXPECT_EQ(tuned.StepStages(), (std::vector<std::string>{"baseline", "hessian", "hawq",
                                                          "hawq_refine", "hawq_refine_2",
                                                          "finetune"}));
  // With fine-tuning the rounds bracket twice the margin (0.01), what the fine-tuning stage takes.
  const std::set<std::string> configs = ExpectRoundsNarrowTheBracket(tuned, model, 0.02);
  const size_t tuned_configs = configs.size();
  EXPECT_LE(tuned_configs, 7u);
  const auto finetuned = tuned.OfStage("finetune");
  ASSERT_FALSE(finetuned.empty());
  for (const TrialOutcome* t : finetuned) {
    EXPECT_TRUE(configs.count(t->spec.config_json())) << t->spec.label();
    EXPECT_GE(t->result.top1_before_finetune(), model.baseline_top1 - 0.02 - 1e-12);
  }
  EXPECT_LE(finetuned.size(), 4u);
  EXPECT_LE(2 + tuned_configs + finetuned.size(), 13u);
  for (const TrialOutcome* t : finetuned) {
    EXPECT_EQ(t->spec.finetune().steps(), 1000) << t->spec.label();
    EXPECT_THAT(t->spec.label(), HasSubstr("finetune 1000 steps"));
  }
  for (const char* stage : {"baseline", "hessian", "hawq", "hawq_refine", "hawq_refine_2"}) {
    for (const TrialOutcome* o : tuned.OfStage(stage)) {
      EXPECT_FALSE(o->spec.finetune().has_steps()) << o->spec.label();
    }
  }

  v1::SweepSpec off = Spec("hawq");
  off.mutable_finetune()->set_steps(0);
  EXPECT_EQ(EffectiveFinetune(off).steps(), 0);
  const Sweep plain = RunSweep(*Make("hawq"), off, model);
  EXPECT_TRUE(plain.last().done);
  EXPECT_TRUE(plain.OfStage("finetune").empty());
  const size_t plain_configs = plain.OfStage("hawq").size() + plain.OfStage("hawq_refine").size() +
                               plain.OfStage("hawq_refine_2").size();
  EXPECT_GT(plain_configs, tuned_configs);
  EXPECT_LE(plain_configs, 11u);

  EXPECT_TRUE(RunSweep(*Make("hawq-table"), Spec("hawq-table"), model).OfStage("finetune").empty());
}

TEST(Hawq, ABudgetSplitsBetweenTheRounds) {
  const FakeModel model = LeNetLike();
  v1::SweepSpec spec = Spec("hawq");
  spec.set_budget(22);
  const Sweep sweep = RunSweep(*Make("hawq"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  const size_t first = sweep.OfStage("hawq").size(), refine = sweep.OfStage("hawq_refine").size(),
               refine_2 = sweep.OfStage("hawq_refine_2").size();
  EXPECT_LE(first, 10u);
  EXPECT_GE(first, 5u);
  EXPECT_LE(first + refine + refine_2, 22u);
  // The rest, 12, in two rounds of at most 6 each.
  EXPECT_LE(refine, 6u);
  EXPECT_LE(refine_2, 6u);
  EXPECT_GT(refine + refine_2, 5u);
}

// ---- random ----------------------------------------------------------------------------------

std::vector<std::string> RandomConfigs(const v1::SweepSpec& spec, const FakeModel& model) {
  std::vector<std::string> configs;
  const Sweep sweep = RunSweep(*Make("random"), spec, model);
  for (const TrialOutcome* o : sweep.OfStage("random")) {
    configs.push_back(o->spec.config_json());
  }
  return configs;
}

TEST(Random, DeterministicBySeedWithBudget) {
  const FakeModel model = LeNetLike();
  v1::SweepSpec spec = PaperSpec("random");
  spec.set_seed(42);
  const std::vector<std::string> a = RandomConfigs(spec, model);
  EXPECT_EQ(a.size(), 32u);  // budget 0 means 32
  EXPECT_EQ(std::set<std::string>(a.begin(), a.end()).size(), a.size());
  EXPECT_EQ(RandomConfigs(spec, model), a);
  spec.set_seed(43);
  EXPECT_NE(RandomConfigs(spec, model), a);
  spec.set_budget(5);
  EXPECT_EQ(RandomConfigs(spec, model).size(), 5u);

  // Every layer gets weights and activations from the candidates.
  const std::set<std::string> candidates = {"fixed:16", "fixed:8", "fixed:4", "fixed:2"};
  const Sweep sweep = RunSweep(*Make("random"), spec, model);
  EXPECT_EQ(sweep.StepStages(), (std::vector<std::string>{"baseline", "random"}));
  for (const TrialOutcome* o : sweep.OfStage("random")) {
    const quant::QuantConfig c = ParsedConfig(*o);
    ASSERT_EQ(c.layers.size(), model.layers.size());
    for (const auto& [name, roles] : c.layers) {
      EXPECT_TRUE(candidates.count(Fmt(roles.weights)));
      EXPECT_TRUE(candidates.count(Fmt(roles.inputs)));
      EXPECT_EQ(Fmt(roles.inputs), Fmt(roles.outputs));
    }
  }
}

TEST(Random, SmallSpaceYieldsEachConfigOnce) {
  FakeModel model;
  model.layers.push_back({"fc", "fc", 100, 100, 20, 0.001, 0.001});
  v1::SweepSpec spec = Spec("random");
  spec.set_budget(10);
  spec.mutable_space()->add_weight_formats("fixed:8");
  spec.mutable_space()->add_activation_formats("fixed:8");
  spec.mutable_space()->add_activation_formats("fixed:4");
  const std::vector<std::string> configs = RandomConfigs(spec, model);
  EXPECT_EQ(configs.size(), 2u);
}

// ---- evolutionary ----------------------------------------------------------------------------

std::vector<std::string> ConfigsOf(const Sweep& sweep, const std::string& stage_prefix) {
  std::vector<std::string> configs;
  for (const TrialOutcome& o : sweep.outcomes) {
    if (o.spec.stage().rfind(stage_prefix, 0) == 0) configs.push_back(o.spec.config_json());
  }
  return configs;
}

v1::SweepSpec WideSpace(const std::string& strategy) {
  v1::SweepSpec spec = Spec(strategy);
  for (int bits : {16, 12, 10, 8, 6, 5, 4, 3, 2}) {
    spec.mutable_space()->add_weight_formats("fixed:" + std::to_string(bits));
    spec.mutable_space()->add_activation_formats("fixed:" + std::to_string(bits));
  }
  return spec;
}

TEST(Evolutionary, GenerationsUntilTheBudgetThenFinetunesTheFront) {
  const FakeModel model = LeNetLike();
  v1::SweepSpec spec = WideSpace("evolutionary");
  spec.set_budget(40);
  spec.set_population(10);
  spec.set_seed(7);
  spec.set_error_margin(1.0);
  spec.mutable_finetune()->set_steps(100);
  ASSERT_TRUE(Make("evolutionary")->Validate(spec).ok());
  const Sweep sweep = RunSweep(*Make("evolutionary"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(),
            (std::vector<std::string>{"baseline", "generation 1", "generation 2", "generation 3",
                                      "generation 4", "finetune"}));
  for (int g = 1; g <= 4; ++g) {
    EXPECT_EQ(sweep.OfStage("generation " + std::to_string(g)).size(), 10u) << g;
  }
  const std::vector<std::string> configs = ConfigsOf(sweep, "generation ");
  EXPECT_EQ(configs.size(), 40u);
  EXPECT_EQ(std::set<std::string>(configs.begin(), configs.end()).size(), configs.size());
  // Generation 1: the 9 uniform widths (every layer alike, widest first), then a sample.
  const auto first = sweep.OfStage("generation 1");
  const std::vector<std::string> widths = {"fixed:16", "fixed:12", "fixed:10", "fixed:8", "fixed:6",
                                           "fixed:5", "fixed:4", "fixed:3", "fixed:2"};
  for (size_t i = 0; i < first.size(); ++i) {
    SCOPED_TRACE(first[i]->spec.label());
    if (i >= widths.size()) {
      EXPECT_THAT(first[i]->spec.label(), HasSubstr("(sampled)"));
      continue;
    }
    EXPECT_THAT(first[i]->spec.label(), HasSubstr("(uniform)"));
    const quant::QuantConfig c = ParsedConfig(*first[i]);
    ASSERT_EQ(c.layers.size(), model.layers.size());
    for (const auto& [name, roles] : c.layers) {
      EXPECT_EQ(Fmt(roles.weights), widths[i]);
      EXPECT_EQ(Fmt(roles.inputs), widths[i]);
    }
  }
  // Later generations are bred from the earlier ones (the genomes were read back).
  int bred = 0;
  for (const TrialOutcome* o : sweep.OfStage("generation 4")) {
    bred += o->spec.label().find("(bred)") != std::string::npos;
  }
  EXPECT_GT(bred, 5);

  // Fine-tuned: up to 4 configs, each within the margin and on the first front (no generation
  // config within the margin dominates it in top1 and size).
  const auto tuned = sweep.OfStage("finetune");
  ASSERT_FALSE(tuned.empty());
  EXPECT_LE(tuned.size(), 4u);
  for (const TrialOutcome* t : tuned) {
    EXPECT_EQ(t->spec.finetune().steps(), 100);
    const TrialOutcome* original = nullptr;
    for (const TrialOutcome& o : sweep.outcomes) {
      if (o.spec.stage() != "finetune" && o.spec.config_json() == t->spec.config_json()) {
        original = &o;
      }
    }
    ASSERT_NE(original, nullptr);
    EXPECT_GE(original->result.top1(), model.baseline_top1 - 0.01 - 1e-9);
    for (const TrialOutcome& o : sweep.outcomes) {
      if (o.spec.stage().rfind("generation ", 0) != 0) continue;
      if (o.result.top1() < model.baseline_top1 - 0.01 - 1e-9) continue;
      const bool dominates =
          o.result.top1() >= original->result.top1() &&
          o.result.size_bits() <= original->result.size_bits() &&
          (o.result.top1() > original->result.top1() ||
           o.result.size_bits() < original->result.size_bits());
      EXPECT_FALSE(dominates) << o.spec.label() << " dominates " << original->spec.label();
    }
  }

  // Deterministic by seed.
  EXPECT_EQ(ConfigsOf(RunSweep(*Make("evolutionary"), spec, model), "generation "), configs);
  spec.set_seed(8);
  EXPECT_NE(ConfigsOf(RunSweep(*Make("evolutionary"), spec, model), "generation "), configs);
}

// The area (in [0, 1]) that the configs within the margin dominate in (size / fp32 size,
// top-1 drop / margin), both minimized, against the reference (1, 1).
double MarginHypervolume(const Sweep& sweep, const FakeModel& model, double margin) {
  double fp32_bits = 0;
  for (const FakeLayer& l : model.layers) fp32_bits += 32.0 * l.weight_count;
  std::vector<std::array<double, 2>> points;
  for (const TrialOutcome& o : sweep.outcomes) {
    if (o.spec.stage() == "baseline" || !o.succeeded) continue;
    const double drop = (model.baseline_top1 - o.result.top1()) / margin;
    if (drop > 1) continue;
    points.push_back({o.result.size_bits() / fp32_bits, std::max(drop, 0.0)});
  }
  return Hypervolume2D(points, {1.0, 1.0});
}

TEST(Evolutionary, FindsABetterFrontierThanRandomWithTheSameBudget) {
  // 81^4 configs, 96 evaluated: random sampling mostly lands far from the frontier. Selection
  // and breeding should do better with the same budget, for most seeds.
  const FakeModel model = LeNetLike();
  double random_total = 0, evolutionary_total = 0;
  int evolutionary_wins = 0;
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    v1::SweepSpec spec = WideSpace("random");
    spec.set_budget(96);
    spec.set_seed(seed);
    spec.set_error_margin(1.0);
    const double random_hv = MarginHypervolume(RunSweep(*Make("random"), spec, model), model, 0.01);
    spec.set_strategy("evolutionary");
    spec.set_population(16);
    const double evolutionary_hv =
        MarginHypervolume(RunSweep(*Make("evolutionary"), spec, model), model, 0.01);
    random_total += random_hv;
    evolutionary_total += evolutionary_hv;
    evolutionary_wins += evolutionary_hv > random_hv;
    std::printf("seed %d: hypervolume random %.4f, evolutionary %.4f\n", static_cast<int>(seed),
                random_hv, evolutionary_hv);
  }
  // Over 30 seeds: 0.837 against 0.677 on average, ahead for all 30.
  EXPECT_GT(evolutionary_total, random_total);
  EXPECT_GE(evolutionary_wins, 9);
}

TEST(Evolutionary, SmallSpaceEndsWhenExhausted) {
  FakeModel model;
  model.layers.push_back({"fc", "fc", 100, 100, 20, 0.001, 0.001});
  v1::SweepSpec spec = Spec("evolutionary");
  spec.set_budget(10);
  spec.set_population(4);
  spec.mutable_space()->add_weight_formats("fixed:8");
  spec.mutable_space()->add_activation_formats("fixed:8");
  spec.mutable_space()->add_activation_formats("fixed:4");
  const Sweep sweep = RunSweep(*Make("evolutionary"), spec, model);
  EXPECT_TRUE(sweep.last().done);
  EXPECT_EQ(sweep.StepStages(), (std::vector<std::string>{"baseline", "generation 1"}));
  EXPECT_EQ(ConfigsOf(sweep, "generation ").size(), 2u);
}

}  // namespace
}  // namespace bitsweep::server
