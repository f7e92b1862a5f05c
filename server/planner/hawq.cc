// The hawq strategies: per-layer mixed precision chosen by an exact integer program, in the spirit
// of HAWQ-V3 (Yao et al., "HAWQ-V3: Dyadic Neural Network Quantization", ICML 2021). Two sources of
// per-layer sensitivities:
//
// "hawq" (default): second-order sensitivities from ONE worker trial.
//   stage "baseline"     the fp32 baseline (and activation ranges, MACs, fan-in per layer).
//   stage "hessian"      one fp32 trial with TrialSpec.collect_sensitivities and the candidate
//                        formats (worker/engine/train/hessian.h): per layer, the Hutchinson
//                        trace of the loss Hessian of its weights and, per weight candidate, the
//                        predicted loss increase 0.5 Tr(H)/n ||Q(W) - W||^2; per activation
//                        candidate, the measured loss increase of that layer's activations alone
//                        (and of its weights, used instead of the prediction when the trace is
//                        not 2 standard errors above 0; rungs are made monotone in width, see
//                        HessianRungs). Its config is fp32 with the probes' seed derived from
//                        the candidates and a version of the computation, so that a changed
//                        computation is not served an old result; the deduplication key also
//                        holds the sensitivity request, so a plain fp32 baseline never serves it
//                        and equal sweeps share it.
//   stage "hawq"         the knapsack (below) over predicted loss increases (nats); the cheapest
//                        plan predicted at or under each of budget x 5/11 targets spaced
//                        geometrically from 1 % to 100 % of the baseline's loss.
//   stages "hawq_refine", "hawq_refine_2"  the rest of the budget in two rounds of (about) half
//                        each: targets spaced geometrically between the largest predicted increase
//                        measured within the error margin so far and the smallest one measured
//                        outside it (the bracket where the cheapest in-margin config lies), which
//                        the second round narrows. With fine-tuning (the default) the bracket is
//                        on 2 x the margin instead, the fine-tuning stage's reach: the rounds
//                        find the cheapest configs it can still bring in. Labels carry the predicted
//                        loss and a predicted top-1 from a least-squares fit (through 0) of
//                        measured top-1 drop on predicted loss over the configs measured so far
//                        within 3 margins, so the predictor can be checked.
//   Default budget 7 configs with fine-tuning (the default, DefaultFinetuneStepsFor), 11 without
//   (FinetuneSpec.steps = 0): at most 13 trials in all, 20 % of squeezenet-mini's per-class grid.
//   Default weight candidates (DefaultWeightFormatsFor("hawq"), strategy.h): fixed:16 and the
//   per-channel asymmetric integers int:8:asym:channel down to int:2:asym:channel, which lose far
//   less than per-tensor fixed point at 2-4 bits; activations as the other strategies.
//
// "hawq-table": measured single-layer drops (one trial per layer and candidate).
//   stage "sensitivity"  the sensitivity table, as in the sensitivity strategy (same configs, so
//                        either strategy reuses the other's trials): each layer alone at each
//                        weight candidate, and alone at each activation candidate (its inputs and
//                        outputs), the rest of the network fp32.
//   stage "hawq"         predicted loss is drop_w + drop_a, drop = max(0, baseline top-1 - the
//                        table's top-1) (the additivity assumption of HAWQ and of sensitivity
//                        search); a role whose table trials all failed stays fp32 (drop 0). From
//                        the knapsack's front the step takes SweepSpec.budget configs (0: 24):
//                          2/3 of them at predicted drops 0, 2m/n, 4m/n, ... below 2 x the
//                          error margin m (the cheapest plan predicted at or under each), where
//                          configs near the margin are decided; the rest at budgets spaced
//                          geometrically from the cheapest plan up to those, for the low-cost end
//                          of the frontier.
//
// Both: every layer gets one weight candidate and one activation candidate. A plan's cost is the
// budget objective: the first of SweepSpec.objectives that is size, energy or BOPs (default:
// energy for hawq, size for hawq-table),
// computed per layer by the cost model (quant/cost_model.h) from the baseline's
// layer shapes and the sweep's hardware profile: exactly what a worker reports. The knapsack DP
// (knapsack.h) finds the optimal plan for EVERY budget at once. Each label carries the budget,
// the prediction and the predicted cost (bench/search_quality.sh compares them with the measured).
//   stage "finetune"     (fine-tuning steps > 0: by default 1000 for hawq) the measured top-1-vs-cost frontier of the hawq
//                        configs within 2 x the error margin, its 4 cheapest points: the
//                        in-margin end of the frontier and the points just outside it, which
//                        fine-tuning can bring back within.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
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
constexpr char kSensitivitiesStage[] = "hessian";
// The refinement rounds: each brackets the error margin more narrowly than the one before, so
// that the frontier has configs just inside and just outside it (those fine-tuning can bring in).
constexpr const char* kRefineStages[] = {"hawq_refine", "hawq_refine_2"};
// Every stage whose configs come from the knapsack front.
constexpr const char* kHawqStages[] = {kHawqStage, kRefineStages[0], kRefineStages[1]};
constexpr int64_t kDefaultConfigs = 24;         // hawq-table
constexpr int64_t kDefaultHessianConfigs = 11;  // hawq, all rounds, without fine-tuning
// With fine-tuning (the default) the rounds take 7 so that with up to kMaxFinetunePoints
// fine-tuned, the baseline and the sensitivities trial the sweep stays at 13 trials.
constexpr int64_t kDefaultFinetunedHessianConfigs = 7;
constexpr double kNearMarginMultiple = 2.0;
constexpr size_t kMaxFinetunePoints = 4;
constexpr int kFp32Bits = 32;
constexpr double kTraceSigmas = 2.0;
constexpr double kTieBreak = 1e-7;  // nats

// The outcomes of the stages `stages`, stage by stage.
template <size_t N>
std::vector<const TrialOutcome*> OfStages(const std::vector<TrialOutcome>& outcomes,
                                          const char* const (&stages)[N]) {
  std::vector<const TrialOutcome*> out;
  for (const char* stage : stages) {
    for (const TrialOutcome* o : OfStage(outcomes, stage)) out.push_back(o);
  }
  return out;
}

// The first of SweepSpec.objectives that is size, energy or BOPs; without one, energy for hawq
// (it prices weights and activations, where a size budget leaves activations free and so at their
// widest candidate, 16 bits, whose multiplies and traffic then dominate the energy) and size for
// hawq-table.
v1::Objective BudgetObjective(const v1::SweepSpec& spec) {
  for (int o : spec.objectives()) {
    if (o == v1::OBJECTIVE_SIZE || o == v1::OBJECTIVE_ENERGY || o == v1::OBJECTIVE_BOPS) {
      return static_cast<v1::Objective>(o);
    }
  }
  return spec.strategy() == "hawq" ? v1::OBJECTIVE_ENERGY : v1::OBJECTIVE_SIZE;
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
  info.output_channels = layer.output_channels();
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

// One rung of a role: a format and its predicted loss (top-1 drop or nats; fp32: 0).
struct Rung {
  std::string format;
  double loss = 0;
};

// A layer role's rungs, in candidate order.
using RungsFn = std::function<absl::StatusOr<std::vector<Rung>>(
    const std::string& layer, Role role, const std::vector<Candidate>& candidates)>;

// hawq-table: the single-layer drops of the table trials.
RungsFn TableRungs(const std::vector<TrialOutcome>& outcomes, double baseline_top1) {
  return [&outcomes, baseline_top1](const std::string& layer, Role role,
                                    const std::vector<Candidate>& candidates)
             -> absl::StatusOr<std::vector<Rung>> {
    std::vector<Rung> rungs;
    for (const Candidate& c : candidates) {
      ASSIGN_OR_RETURN(const TrialOutcome* o, SingleLayerOutcome(outcomes, layer, role, c.format));
      if (o == nullptr || !o->succeeded) continue;
      rungs.push_back({c.format, std::max(0.0, baseline_top1 - o->result.top1())});
    }
    if (rungs.empty()) rungs.push_back({"fp32", 0.0});
    return rungs;
  };
}

// hawq: the sensitivities trial's predicted loss increases. Weights use the Hessian prediction
// when the layer's trace is significantly positive (above kTraceSigmas standard errors), else the
// measured single-layer increases the same trial reports. Then, from the widest candidate to the
// narrowest, each rung's loss is at least the one before plus kTieBreak (measured increases of
// nearly lossless formats are noise: without this a narrower width could look better than a
// wider one, or equal to it where the cost objective ignores the role, e.g. activations under a
// size budget); negative values count as 0.
RungsFn HessianRungs(const v1::TrialResult& sensitivities) {
  return [&sensitivities](const std::string& layer, Role role,
                          const std::vector<Candidate>& candidates)
             -> absl::StatusOr<std::vector<Rung>> {
    auto it = std::find_if(sensitivities.layers().begin(), sensitivities.layers().end(),
                           [&](const v1::LayerResult& l) { return l.name() == layer; });
    if (it == sensitivities.layers().end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the sensitivities trial reported no layer ", layer));
    }
    const bool weights = role == Role::kWeights;
    const auto& table = weights ? it->weight_sensitivities() : it->activation_sensitivities();
    const bool use_hessian =
        weights && it->hessian_trace() > kTraceSigmas * it->hessian_trace_stderr();
    std::vector<Rung> rungs;
    double floor = 0;
    for (const Candidate& c : candidates) {
      for (const v1::FormatSensitivity& f : table) {
        if (f.format() != c.format) continue;
        const double loss = use_hessian ? f.loss_increase() : f.measured_loss_increase();
        floor = std::max(std::max(0.0, loss), rungs.empty() ? 0.0 : floor + kTieBreak);
        rungs.push_back({c.format, floor});
        break;
      }
    }
    if (rungs.empty()) rungs.push_back({"fp32", 0.0});
    return rungs;
  };
}

// A layer's options: every (weight rung, activation rung) pair.
struct LayerOptions {
  std::string layer;
  std::vector<std::pair<std::string, std::string>> formats;  // weights, activations
  std::vector<KnapsackOption> options;                        // parallel: cost, predicted loss
};

absl::StatusOr<std::vector<LayerOptions>> BuildOptions(const v1::SweepSpec& spec,
                                                       const Baseline& baseline,
                                                       const RungsFn& rungs) {
  ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
  ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
  ASSIGN_OR_RETURN(quant::HardwareProfile profile,
                   quant::SettingsHardwareProfile(spec.settings().hardware_profile_json()));
  const v1::Objective objective = BudgetObjective(spec);
  std::vector<LayerOptions> table;
  for (const v1::LayerResult& layer : baseline.layers) {
    LayerOptions lo{layer.name()};
    ASSIGN_OR_RETURN(std::vector<Rung> w, rungs(layer.name(), Role::kWeights, weights));
    ASSIGN_OR_RETURN(std::vector<Rung> a, rungs(layer.name(), Role::kActivations, activations));
    const std::vector<quant::LayerInfo> info = {InfoOf(layer)};
    for (const Rung& wr : w) {
      ASSIGN_OR_RETURN(quant::NumberFormat wf, quant::ParseFormat(wr.format));
      for (const Rung& ar : a) {
        ASSIGN_OR_RETURN(quant::NumberFormat af, quant::ParseFormat(ar.format));
        const quant::CostReport cost = quant::EstimateCost(info, {{wf, af, af}}, profile);
        lo.formats.emplace_back(wr.format, ar.format);
        lo.options.push_back({CostOf(cost.total, objective), wr.loss + ar.loss});
      }
    }
    table.push_back(std::move(lo));
  }
  return table;
}

// The cheapest plan predicted to lose at most `target` (plans: by cost, loss decreasing).
std::optional<size_t> CheapestWithin(const KnapsackFront& front, double target) {
  for (size_t i = 0; i < front.plans.size(); ++i) {
    if (front.plans[i].loss <= target + 1e-12) return i;
  }
  return std::nullopt;
}

// hawq-table: indices into front.plans of the plans to evaluate.
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
    if (std::optional<size_t> i = CheapestWithin(front, target)) {
      chosen.insert(*i);
      cheapest_near = std::min(cheapest_near, *i);
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

// The config of a plan and the description of its formats ("weights conv1 fixed:4, ...;
// activations conv1 fixed:8, ...").
struct PlanConfig {
  std::string canonical;
  std::string description;
};

absl::StatusOr<PlanConfig> ConfigOfPlan(const KnapsackPlan& plan,
                                        const std::vector<LayerOptions>& table) {
  ConfigJson config = ConfigJson::object();
  std::vector<std::string> weight_parts, activation_parts;
  for (size_t l = 0; l < table.size(); ++l) {
    const auto& [w, a] = table[l].formats[plan.choice[l]];
    if (w != "fp32") SetLayerRole(config, table[l].layer, "weights", w);
    if (a != "fp32") SetLayerRole(config, table[l].layer, "activations", a);
    weight_parts.push_back(absl::StrCat(table[l].layer, " ", w));
    activation_parts.push_back(absl::StrCat(table[l].layer, " ", a));
  }
  PlanConfig out;
  ASSIGN_OR_RETURN(out.canonical, CanonicalConfig(config));
  out.description = absl::StrCat("weights ", absl::StrJoin(weight_parts, ", "), "; activations ",
                                 absl::StrJoin(activation_parts, ", "));
  return out;
}

absl::StatusOr<KnapsackFront> FrontOf(const std::vector<LayerOptions>& table) {
  std::vector<std::vector<KnapsackOption>> groups;
  for (const LayerOptions& lo : table) groups.push_back(lo.options);
  return ParetoPlans(groups);
}

absl::StatusOr<std::vector<v1::TrialSpec>> TableTrials(const v1::SweepSpec& spec,
                                                       const Baseline& baseline,
                                                       const std::vector<TrialOutcome>& outcomes) {
  ASSIGN_OR_RETURN(std::vector<LayerOptions> table,
                   BuildOptions(spec, baseline, TableRungs(outcomes, baseline.top1)));
  ASSIGN_OR_RETURN(KnapsackFront front, FrontOf(table));
  const double margin = ErrorMarginPp(spec) / 100.0;
  const int64_t count = spec.budget() > 0 ? spec.budget() : kDefaultConfigs;
  const v1::Objective objective = BudgetObjective(spec);

  std::vector<v1::TrialSpec> trials;
  for (size_t index : ChoosePlans(front, margin, count)) {
    const KnapsackPlan& plan = front.plans[index];
    ASSIGN_OR_RETURN(PlanConfig config, ConfigOfPlan(plan, table));
    const std::string label = absl::StrFormat(
        "hawq %s <= %s%s: predicted top-1 %.2f%% (drop %.2f pp); %s", ObjectiveName(objective),
        CostText(plan.cost, objective), front.exact ? "" : " (approximate front)",
        100.0 * (baseline.top1 - plan.loss), 100.0 * plan.loss, config.description);
    trials.push_back(MakeTrial(kHawqStage, label, config.canonical));
  }
  return trials;
}

// ---- hawq: Hessian sensitivities ----------------------------------------------------------------

// The sensitivities trial: fp32, with the candidates and a seed derived from them.
absl::StatusOr<v1::TrialSpec> SensitivitiesTrial(const v1::SweepSpec& spec) {
  ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
  ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
  std::string key = "hawq sensitivities v3";  // bump when the worker computes them differently
  for (const Candidate& c : weights) absl::StrAppend(&key, " w", c.format);
  for (const Candidate& c : activations) absl::StrAppend(&key, " a", c.format);
  uint64_t seed = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char ch : key) seed = (seed ^ ch) * 1099511628211ULL;
  ConfigJson config = ConfigJson::object();
  config["seed"] = (seed >> 33) | 1;  // 31 bits, never 0
  ASSIGN_OR_RETURN(std::string canonical, CanonicalConfig(config));
  v1::TrialSpec trial = MakeTrial(
      kSensitivitiesStage,
      "fp32 sensitivities: Hutchinson Hessian traces and single-layer loss increases",
      canonical);
  trial.set_collect_sensitivities(true);
  for (const Candidate& c : weights) trial.add_sensitivity_weight_formats(c.format);
  for (const Candidate& c : activations) trial.add_sensitivity_activation_formats(c.format);
  return trial;
}

// The measured outcomes of the Hessian-mode configs: predicted loss (from the label's plan) and
// measured top-1 drop (fraction).
struct Measured {
  double predicted_loss = 0;
  double drop = 0;
  bool within = false;
};

// The predicted loss a hessian-mode label carries ("... predicted loss +0.01234 nats ...").
std::optional<double> PredictedLossOfLabel(const std::string& label) {
  const std::string key = "predicted loss +";
  const size_t at = label.find(key);
  if (at == std::string::npos) return std::nullopt;
  double value = 0;
  if (std::sscanf(label.c_str() + at + key.size(), "%lf", &value) != 1) return std::nullopt;
  return value;
}

std::vector<Measured> MeasuredPlans(const std::vector<TrialOutcome>& outcomes,
                                    double baseline_top1, double margin_pp) {
  std::vector<Measured> out;
  for (const TrialOutcome* o : OfStages(outcomes, kHawqStages)) {
    if (!o->succeeded) continue;
    std::optional<double> predicted = PredictedLossOfLabel(o->spec.label());
    if (!predicted) continue;
    out.push_back({*predicted, baseline_top1 - o->result.top1(),
                   Passes(*o, baseline_top1, margin_pp)});
  }
  return out;
}

// Least-squares slope through 0 of measured drop on predicted loss, over the configs measured
// within `near` (3 x the margin) of the baseline: far beyond it the layers' errors compound and a
// few configs at tens of points would set the slope for all. All configs when none is that near;
// 0 without data.
double DropPerNat(const std::vector<Measured>& measured, double near) {
  double xy = 0, xx = 0;
  for (const bool all : {false, true}) {
    for (const Measured& m : measured) {
      if (!all && m.drop > near) continue;
      xy += m.predicted_loss * m.drop;
      xx += m.predicted_loss * m.predicted_loss;
    }
    if (xx > 0) break;
  }
  return xx > 0 ? std::max(0.0, xy / xx) : 0.0;
}

// Targets (predicted loss) of a refinement round: inside the bracket of the measured plans.
std::vector<double> RefineTargets(const std::vector<Measured>& measured, double max_loss,
                                  int64_t count) {
  double low = 0, high = max_loss;
  for (const Measured& m : measured) {
    if (m.within) low = std::max(low, m.predicted_loss);
  }
  for (const Measured& m : measured) {
    if (!m.within && m.predicted_loss > low) high = std::min(high, m.predicted_loss);
  }
  if (low <= 0) low = high / 100.0;
  std::vector<double> targets;
  for (int64_t j = 1; j <= count; ++j) {
    const double t = static_cast<double>(j) / static_cast<double>(count + 1);
    targets.push_back(low > 0 && high > low ? low * std::pow(high / low, t)
                                            : low + (high - low) * t);
  }
  return targets;
}

class HessianPlanner {
 public:
  static absl::StatusOr<HessianPlanner> Create(const v1::SweepSpec& spec, const Baseline& baseline,
                                               const v1::TrialResult& sensitivities) {
    HessianPlanner p(spec, baseline, sensitivities.loss());
    ASSIGN_OR_RETURN(p.table_, BuildOptions(spec, baseline, HessianRungs(sensitivities)));
    ASSIGN_OR_RETURN(p.front_, FrontOf(p.table_));
    return p;
  }

  int64_t total() const {
    if (spec_.budget() > 0) return spec_.budget();
    return EffectiveFinetune(spec_).steps() > 0 ? kDefaultFinetunedHessianConfigs
                                                : kDefaultHessianConfigs;
  }
  int64_t first_round() const { return std::max<int64_t>(1, total() * 5 / 11); }

  // Stage "hawq": targets from 1 % to 100 % of the baseline loss.
  absl::StatusOr<std::vector<v1::TrialSpec>> FirstRound() const {
    const int64_t n = first_round();
    const double base = baseline_loss_ > 0 ? baseline_loss_ : 1.0;
    std::vector<double> targets;
    for (int64_t j = 0; j < n; ++j) {
      const double t = n == 1 ? 0.5 : static_cast<double>(j) / static_cast<double>(n - 1);
      targets.push_back(base * kFirstLow * std::pow(kFirstHigh / kFirstLow, t));
    }
    return Trials(kHawqStage, targets, {}, std::nullopt);
  }

  // Refinement round `round` (0-based, stage kRefineStages[round]): its share of the rest of the
  // budget inside the bracket measured so far, which each round narrows.
  absl::StatusOr<std::vector<v1::TrialSpec>> RefineRound(
      size_t round, const std::vector<TrialOutcome>& outcomes) const {
    const int64_t rest = total() - first_round();
    const int64_t rounds = static_cast<int64_t>(std::size(kRefineStages));
    // Round r takes ceil of an equal share of what the earlier rounds left.
    int64_t n = 0, left = rest;
    for (int64_t r = 0; r <= static_cast<int64_t>(round); ++r) {
      n = (left + (rounds - r) - 1) / (rounds - r);
      left -= n;
    }
    if (n <= 0) return std::vector<v1::TrialSpec>{};
    // With fine-tuning the bracket is the fine-tuning stage's reach (FinetunePoints), whose
    // cheapest configs it may bring within the margin; without, the margin itself.
    const double bracket_pp = (EffectiveFinetune(spec_).steps() > 0 ? kNearMarginMultiple : 1.0) *
                              ErrorMarginPp(spec_);
    const std::vector<Measured> bracket = MeasuredPlans(outcomes, baseline_.top1, bracket_pp);
    const std::vector<Measured> measured =
        MeasuredPlans(outcomes, baseline_.top1, ErrorMarginPp(spec_));
    std::set<std::string> done;
    for (const TrialOutcome* o : OfStages(outcomes, kHawqStages)) {
      done.insert(o->spec.config_json());
    }
    return Trials(kRefineStages[round], RefineTargets(bracket, front_.plans.front().loss, n),
                  done, DropPerNat(measured, kNearFit * ErrorMarginPp(spec_) / 100.0));
  }

 private:
  static constexpr double kFirstLow = 0.01, kFirstHigh = 1.0;
  static constexpr double kNearFit = 3.0;

  HessianPlanner(const v1::SweepSpec& spec, const Baseline& baseline, double baseline_loss)
      : spec_(spec), baseline_(baseline), baseline_loss_(baseline_loss) {}

  absl::StatusOr<std::vector<v1::TrialSpec>> Trials(const char* stage,
                                                    const std::vector<double>& targets,
                                                    std::set<std::string> done,
                                                    std::optional<double> drop_per_nat) const {
    const v1::Objective objective = BudgetObjective(spec_);
    std::vector<v1::TrialSpec> trials;
    for (double target : targets) {
      // No plan predicted that low: the most accurate one.
      const size_t index = CheapestWithin(front_, target).value_or(front_.plans.size() - 1);
      const KnapsackPlan& plan = front_.plans[index];
      ASSIGN_OR_RETURN(PlanConfig config, ConfigOfPlan(plan, table_));
      if (!done.insert(config.canonical).second) continue;
      std::string top1;
      if (drop_per_nat) {
        top1 = absl::StrFormat(", predicted top-1 %.2f%% (%.1f pp per nat fitted on stage hawq)",
                               100.0 * (baseline_.top1 - *drop_per_nat * plan.loss),
                               100.0 * *drop_per_nat);
      }
      const std::string label = absl::StrFormat(
          "hawq loss <= %.5f: predicted loss +%.5f nats%s; %s %s%s; %s", target, plan.loss, top1,
          ObjectiveName(objective), CostText(plan.cost, objective),
          front_.exact ? "" : " (approximate front)", config.description);
      trials.push_back(MakeTrial(stage, label, config.canonical));
    }
    return trials;
  }

  const v1::SweepSpec& spec_;
  const Baseline& baseline_;
  double baseline_loss_ = 0;
  std::vector<LayerOptions> table_;
  KnapsackFront front_;
};

// The cheapest kMaxFinetunePoints of the measured top-1-vs-cost frontier of the hawq configs
// within kNearMarginMultiple x the margin.
std::vector<const TrialOutcome*> FinetunePoints(const v1::SweepSpec& spec, double baseline_top1,
                                                const std::vector<TrialOutcome>& outcomes) {
  const double near_pp = kNearMarginMultiple * ErrorMarginPp(spec);
  std::vector<const TrialOutcome*> near;
  for (const TrialOutcome* o : OfStages(outcomes, kHawqStages)) {
    if (Passes(*o, baseline_top1, near_pp)) near.push_back(o);
  }
  return CheapestFrontierPoints(near, BudgetObjective(spec), kMaxFinetunePoints);
}

class HawqStrategy : public Strategy {
 public:
  explicit HawqStrategy(bool hessian) : hessian_(hessian) {}

  absl::Status Validate(const v1::SweepSpec& spec) const override {
    RETURN_IF_ERROR(ValidateBudgetedSearch(spec, hessian_ ? "hawq" : "hawq-table"));
    if (BudgetObjective(spec) == v1::OBJECTIVE_ENERGY) {
      return quant::SettingsHardwareProfile(spec.settings().hardware_profile_json()).status();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    ASSIGN_OR_RETURN(BaselineOrStep base, ResolveBaseline(outcomes));
    if (base.step) return *base.step;
    if (hessian_) {
      ASSIGN_OR_RETURN(std::optional<PlanStep> step, HessianStep(spec, base.baseline, outcomes));
      if (step) return *step;
    } else {
      ASSIGN_OR_RETURN(std::optional<PlanStep> table,
                       SensitivityTableStep(spec, base.baseline, outcomes));
      if (table) return *table;
      if (!HasStage(outcomes, kHawqStage)) {
        ASSIGN_OR_RETURN(std::vector<v1::TrialSpec> trials,
                         TableTrials(spec, base.baseline, outcomes));
        return StageStep(kHawqStage, std::move(trials));
      }
    }
    if (EffectiveFinetune(spec).steps() > 0 && !HasStage(outcomes, kFinetuneStage)) {
      return FinetuneStep(spec, FinetunePoints(spec, base.baseline.top1, outcomes));
    }
    return DoneStep();
  }

 private:
  // The sensitivities trial and the knapsack rounds; nullopt once they ran.
  static absl::StatusOr<std::optional<PlanStep>> HessianStep(
      const v1::SweepSpec& spec, const Baseline& baseline,
      const std::vector<TrialOutcome>& outcomes) {
    const std::vector<const TrialOutcome*> runs = OfStage(outcomes, kSensitivitiesStage);
    if (runs.empty()) {
      ASSIGN_OR_RETURN(v1::TrialSpec trial, SensitivitiesTrial(spec));
      return StageStep(kSensitivitiesStage, {trial});
    }
    if (!runs.front()->succeeded) {
      PlanStep failed;
      failed.failure = absl::StrCat("the sensitivities trial failed: ", runs.front()->error);
      return failed;
    }
    ASSIGN_OR_RETURN(HessianPlanner planner,
                     HessianPlanner::Create(spec, baseline, runs.front()->result));
    if (!HasStage(outcomes, kHawqStage)) {
      ASSIGN_OR_RETURN(std::vector<v1::TrialSpec> trials, planner.FirstRound());
      return StageStep(kHawqStage, std::move(trials));
    }
    // The next refinement round; a round with nothing new to try (its targets fell on configs
    // already measured) ends them.
    for (size_t round = 0; round < std::size(kRefineStages); ++round) {
      if (HasStage(outcomes, kRefineStages[round])) continue;
      ASSIGN_OR_RETURN(std::vector<v1::TrialSpec> trials, planner.RefineRound(round, outcomes));
      if (trials.empty()) return std::nullopt;
      return StageStep(kRefineStages[round], std::move(trials));
    }
    return std::nullopt;
  }

  bool hessian_;
};

}  // namespace

std::unique_ptr<Strategy> NewHawqStrategy() { return std::make_unique<HawqStrategy>(true); }
std::unique_ptr<Strategy> NewHawqTableStrategy() {
  return std::make_unique<HawqStrategy>(false);
}

}  // namespace bitsweep::server::plan
