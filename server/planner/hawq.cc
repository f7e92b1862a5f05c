// The hawq strategy: per-layer mixed precision chosen by an exact integer program, in the spirit
// of HAWQ-V3 (Yao et al., "HAWQ-V3: Dyadic Neural Network Quantization", ICML 2021), with
// measured single-layer accuracy drops as the sensitivities.
//
//   stage "baseline"     the fp32 baseline (and activation ranges, MACs, fan-in per layer).
//   stage "sensitivity"  the sensitivity table, as in the sensitivity strategy (same configs, so
//                        either strategy reuses the other's trials): each layer alone at each
//                        weight candidate, and alone at each activation candidate (its inputs and
//                        outputs), the rest of the network fp32.
//   stage "hawq"         every layer gets one weight candidate and one activation candidate. Its
//                        predicted loss is drop_w + drop_a, drop = max(0, baseline top-1 - the
//                        table's top-1) (the additivity assumption of HAWQ and of sensitivity
//                        search); a role whose table trials all failed stays fp32 (drop 0). Its
//                        cost is the budget objective: the first of SweepSpec.objectives that is
//                        size, energy or BOPs (default size), computed per layer by the cost
//                        model (quant/cost_model.h) from the baseline's layer
//                        shapes and the sweep's hardware profile: exactly what a worker reports.
//                        The knapsack DP (knapsack.h) finds the optimal plan for EVERY budget at
//                        once; from that front the step takes SweepSpec.budget configs (0: 24):
//                          2/3 of them at predicted drops 0, 2m/n, 4m/n, ... below 2 x the
//                          error margin m (the cheapest plan predicted at or under each), where
//                          configs near the margin are decided; the rest at budgets spaced
//                          geometrically from the cheapest plan up to those, for the low-cost end
//                          of the frontier. Each label carries the budget, the predicted top-1
//                          and the predicted cost, so predicted and measured accuracy can be
//                          compared (bench/search_quality.sh reports both).
//   stage "finetune"     (finetune.steps > 0) the measured top-1-vs-cost frontier of the hawq
//                        configs within 2 x the error margin, its 4 cheapest points: the
//                        in-margin end of the frontier and the points just outside it, which
//                        fine-tuning can bring back within.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <optional>
#include <string>
#include <system_error>
#include <vector>


#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/frontier/frontier.h"
#include "server/planner/knapsack.h"
#include "server/planner/plan_util.h"
#include "quant/layer_info.h"
#include "quant/cost_model.h"
#include "quant/format.h"

namespace bitsweep::server::plan {
namespace {

namespace quant = ::bitsweep::quant;

constexpr char kHawqStage[] = "hawq";
constexpr int64_t kDefaultConfigs = 24;
constexpr double kNearMarginMultiple = 2.0;
constexpr size_t kMaxFinetunePoints = 4;
constexpr int kFp32Bits = 32;

v1::Objective BudgetObjective(const v1::SweepSpec& spec) {
  for (int o : spec.objectives()) {
    if (o == v1::OBJECTIVE_SIZE || o == v1::OBJECTIVE_ENERGY || o == v1::OBJECTIVE_BOPS) {
      return static_cast<v1::Objective>(o);
    }
  }
  return v1::OBJECTIVE_SIZE;
}

// The cost model's view of a layer, from its baseline result (every role fp32). Inputs and
// outputs always share a format here, so their element counts are only needed summed: all of
// them go into input_shape.
quant::LayerInfo InfoOf(const v1::LayerResult& layer) {
  quant::LayerInfo info;
  info.name = layer.name();
  info.macs = layer.macs();
  info.weight_count = layer.weight_count();
  info.bias_count = std::max<int64_t>(0, layer.weight_bits() / kFp32Bits - layer.weight_count());
  info.fan_in = layer.fan_in();
  info.input_shape = {layer.activation_bits() / kFp32Bits};
  info.output_shape = {0};
  return info;
}

double CostOf(const quant::LayerCost& cost, v1::Objective objective) {
  switch (objective) {
    case v1::OBJECTIVE_ENERGY:
      return cost.energy_pj;
    case v1::OBJECTIVE_BOPS:
      return static_cast<double>(cost.bops);
    default:
      return static_cast<double>(cost.weight_bits);
  }
}

// One measured rung of a role: a format and its single-layer drop (fp32: drop 0).
struct Rung {
  std::string format;
  double drop = 0;
};

absl::StatusOr<std::vector<Rung>> Rungs(const std::vector<TrialOutcome>& outcomes,
                                        const std::string& layer, Role role,
                                        const std::vector<Candidate>& candidates,
                                        double baseline_top1) {
  std::vector<Rung> rungs;
  for (const Candidate& c : candidates) {
    ASSIGN_OR_RETURN(const TrialOutcome* o, SingleLayerOutcome(outcomes, layer, role, c.format));
    if (o == nullptr || !o->succeeded) continue;
    rungs.push_back({c.format, std::max(0.0, baseline_top1 - o->result.top1())});
  }
  if (rungs.empty()) rungs.push_back({"fp32", 0.0});
  return rungs;
}

// A layer's options: every (weight rung, activation rung) pair.
struct LayerOptions {
  std::string layer;
  std::vector<std::pair<std::string, std::string>> formats;  // weights, activations
  std::vector<KnapsackOption> options;                        // parallel: cost, predicted drop
};

absl::StatusOr<std::vector<LayerOptions>> BuildOptions(const v1::SweepSpec& spec,
                                                       const Baseline& baseline,
                                                       const std::vector<TrialOutcome>& outcomes) {
  ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
  ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
  ASSIGN_OR_RETURN(quant::HardwareProfile profile,
                   quant::SettingsHardwareProfile(spec.settings().hardware_profile_json()));
  const v1::Objective objective = BudgetObjective(spec);
  std::vector<LayerOptions> table;
  for (const v1::LayerResult& layer : baseline.layers) {
    LayerOptions lo{layer.name()};
    ASSIGN_OR_RETURN(std::vector<Rung> w, Rungs(outcomes, layer.name(), Role::kWeights, weights,
                                                baseline.top1));
    ASSIGN_OR_RETURN(std::vector<Rung> a, Rungs(outcomes, layer.name(), Role::kActivations,
                                                activations, baseline.top1));
    const std::vector<quant::LayerInfo> info = {InfoOf(layer)};
    for (const Rung& wr : w) {
      ASSIGN_OR_RETURN(quant::NumberFormat wf, quant::ParseFormat(wr.format));
      for (const Rung& ar : a) {
        ASSIGN_OR_RETURN(quant::NumberFormat af, quant::ParseFormat(ar.format));
        const quant::CostReport cost = quant::EstimateCost(info, {{wf, af, af}}, profile);
        lo.formats.emplace_back(wr.format, ar.format);
        lo.options.push_back({CostOf(cost.total, objective), wr.drop + ar.drop});
      }
    }
    table.push_back(std::move(lo));
  }
  return table;
}

// Indices into front.plans (sorted by cost, loss strictly decreasing) of the plans to evaluate.
std::vector<size_t> ChoosePlans(const KnapsackFront& front, double margin, int64_t count) {
  const std::vector<KnapsackPlan>& plans = front.plans;
  std::set<size_t> chosen;
  if (static_cast<int64_t>(plans.size()) <= count) {
    for (size_t i = 0; i < plans.size(); ++i) chosen.insert(i);
    return {chosen.begin(), chosen.end()};
  }
  // Near the margin: the cheapest plan predicted to lose at most each target drop.
  const int64_t near = (2 * count + 2) / 3;
  const double span = kNearMarginMultiple * margin;
  size_t cheapest_near = plans.size() - 1;
  for (int64_t j = 0; j < near; ++j) {
    const double target = span * static_cast<double>(j) / static_cast<double>(near);
    for (size_t i = 0; i < plans.size(); ++i) {
      if (plans[i].loss <= target + 1e-12) {
        chosen.insert(i);
        cheapest_near = std::min(cheapest_near, i);
        break;
      }
    }
  }
  // Below it: budgets spaced geometrically from the cheapest plan (always included).
  const int64_t far = count - static_cast<int64_t>(chosen.size());
  const double low = plans.front().cost, high = plans[cheapest_near].cost;
  for (int64_t j = 0; j < far; ++j) {
    const double t = far == 1 ? 0.0 : static_cast<double>(j) / static_cast<double>(far);
    const double budget =
        low > 0 && high > low ? low * std::pow(high / low, t) : low + (high - low) * t;
    const KnapsackPlan* plan = BestWithin(front, budget);
    if (plan != nullptr) chosen.insert(static_cast<size_t>(plan - plans.data()));
  }
  return {chosen.begin(), chosen.end()};
}

std::string CostText(double cost, v1::Objective objective) {
  switch (objective) {
    case v1::OBJECTIVE_ENERGY:
      return absl::StrFormat("%.0f pJ", cost);
    case v1::OBJECTIVE_BOPS:
      return absl::StrFormat("%.0f BOPs", cost);
    default:
      return absl::StrFormat("%.0f bits", cost);
  }
}

absl::StatusOr<std::vector<v1::TrialSpec>> HawqTrials(const v1::SweepSpec& spec,
                                                      const Baseline& baseline,
                                                      const std::vector<TrialOutcome>& outcomes) {
  ASSIGN_OR_RETURN(std::vector<LayerOptions> table, BuildOptions(spec, baseline, outcomes));
  std::vector<std::vector<KnapsackOption>> groups;
  for (const LayerOptions& lo : table) groups.push_back(lo.options);
  ASSIGN_OR_RETURN(KnapsackFront front, ParetoPlans(groups));
  const double margin = ErrorMarginPp(spec) / 100.0;
  const int64_t count = spec.budget() > 0 ? spec.budget() : kDefaultConfigs;
  const v1::Objective objective = BudgetObjective(spec);

  std::vector<v1::TrialSpec> trials;
  for (size_t index : ChoosePlans(front, margin, count)) {
    const KnapsackPlan& plan = front.plans[index];
    ConfigJson config = ConfigJson::object();
    std::vector<std::string> weight_parts, activation_parts;
    for (size_t l = 0; l < table.size(); ++l) {
      const auto& [w, a] = table[l].formats[plan.choice[l]];
      if (w != "fp32") SetLayerRole(config, table[l].layer, "weights", w);
      if (a != "fp32") SetLayerRole(config, table[l].layer, "activations", a);
      weight_parts.push_back(absl::StrCat(table[l].layer, " ", w));
      activation_parts.push_back(absl::StrCat(table[l].layer, " ", a));
    }
    ASSIGN_OR_RETURN(std::string canonical, CanonicalConfig(config));
    const std::string label = absl::StrFormat(
        "hawq %s <= %s%s: predicted top-1 %.2f%% (drop %.2f pp); weights %s; activations %s",
        ObjectiveName(objective), CostText(plan.cost, objective),
        front.exact ? "" : " (approximate front)", 100.0 * (baseline.top1 - plan.loss),
        100.0 * plan.loss, absl::StrJoin(weight_parts, ", "),
        absl::StrJoin(activation_parts, ", "));
    trials.push_back(MakeTrial(kHawqStage, label, canonical));
  }
  return trials;
}

// The cheapest kMaxFinetunePoints of the measured top-1-vs-cost frontier of the hawq configs
// within kNearMarginMultiple x the margin.
std::vector<const TrialOutcome*> FinetunePoints(const v1::SweepSpec& spec, double baseline_top1,
                                                const std::vector<TrialOutcome>& outcomes) {
  const double near_pp = kNearMarginMultiple * ErrorMarginPp(spec);
  std::vector<const TrialOutcome*> near;
  for (const TrialOutcome* o : OfStage(outcomes, kHawqStage)) {
    if (Passes(*o, baseline_top1, near_pp)) near.push_back(o);
  }
  return CheapestFrontierPoints(near, BudgetObjective(spec), kMaxFinetunePoints);
}

class HawqStrategy : public Strategy {
 public:
  absl::Status Validate(const v1::SweepSpec& spec) const override {
    RETURN_IF_ERROR(ValidateBudgetedSearch(spec, "hawq"));
    if (BudgetObjective(spec) == v1::OBJECTIVE_ENERGY) {
      return quant::SettingsHardwareProfile(spec.settings().hardware_profile_json()).status();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    ASSIGN_OR_RETURN(BaselineOrStep base, ResolveBaseline(outcomes));
    if (base.step) return *base.step;

    ASSIGN_OR_RETURN(std::optional<PlanStep> table,
                     SensitivityTableStep(spec, base.baseline, outcomes));
    if (table) return *table;
    if (!HasStage(outcomes, kHawqStage)) {
      ASSIGN_OR_RETURN(std::vector<v1::TrialSpec> trials,
                       HawqTrials(spec, base.baseline, outcomes));
      return StageStep(kHawqStage, std::move(trials));
    }
    if (spec.finetune().steps() > 0 && !HasStage(outcomes, kFinetuneStage)) {
      return FinetuneStep(spec, FinetunePoints(spec, base.baseline.top1, outcomes));
    }
    return DoneStep();
  }
};

}  // namespace

std::unique_ptr<Strategy> NewHawqStrategy() { return std::make_unique<HawqStrategy>(); }

}  // namespace bitsweep::server::plan
