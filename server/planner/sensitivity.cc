// The sensitivity strategy: per-layer mixed precision on top of the fp32 baseline.
//
//   stage "sensitivity": one layer at a time, rest fp32: each layer x each weight candidate
//     (layers.L.weights) and each layer x each activation candidate (layers.L.inputs and
//     layers.L.outputs together: "activations" of one layer means what it reads and writes).
//     The table has layers x (weight candidates + activation candidates) trials.
//   stage "greedy": start from all fp32 and repeatedly lower one (layer, role) by one step down
//     its ladder, choosing the move with the smallest estimated accuracy cost per bit saved, and
//     emit the cumulative config after every move (one trial per move, all in this one step).
//       ladder:   the role's candidates by width, widest first; of equal widths only the one
//                 the table rates most accurate for this layer; candidates whose table trial
//                 failed are left out.
//       cost:     drop(new) - drop(current), drop(f) = max(0, baseline top1 - table top1 at f)
//                 (fp32: 0). Estimated drop of a config = sum of its (layer, role) drops: the
//                 usual additivity assumption of sensitivity-based mixed precision.
//       saved:    weights: weight_count x (old bits - new bits). Activations: (input + output
//                 elements) x (old bits - new bits), the elements taken from the baseline's
//                 LayerResult.activation_bits / 32 (fp32); when a worker did not report
//                 activation bits, the layer's MACs stand in (each MAC reads one activation).
//       ties:     more bits saved first, then model order, weights before activations.
//     Stops when no move is left, or after the first move whose estimated drop exceeds 3 x the
//     error margin (that move is still emitted, so the frontier shows where accuracy falls
//     off). The walk is never longer than the sensitivity table (every rung of every ladder
//     once): reaching 8 bits from fp32 through fixed:16 already takes two moves per role.
//   stage "finetune" (finetune.steps > 0): the greedy results on the top1-vs-size frontier,
//     the (at most) 4 smallest of them: the aggressive end of the curve, around and beyond the
//     margin, is where fine-tuning has accuracy to win back.
#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/planner/plan_util.h"

namespace bitsweep::server::plan {
namespace {

constexpr char kGreedyStage[] = "greedy";
constexpr double kStopAtMarginMultiple = 3.0;
constexpr size_t kMaxFinetunePoints = 4;
constexpr int kFp32Bits = 32;

// One rung of a (layer, role) ladder: a format and what the table measured for it.
struct Rung {
  std::string format;
  int bits = kFp32Bits;
  double drop = 0;  // max(0, baseline - top1) when quantized alone
};

// What the greedy walk moves: one role of one layer, down its ladder.
struct Knob {
  std::string layer;
  Role role = Role::kWeights;
  double elements = 0;         // weights, or activation elements (see the file comment)
  std::vector<Rung> ladder;    // widest first
  int position = -1;           // -1: fp32; else index into ladder

  int bits() const { return position < 0 ? kFp32Bits : ladder[position].bits; }
  double drop() const { return position < 0 ? 0.0 : ladder[position].drop; }
};

double ActivationElements(const v1::LayerResult& layer) {
  if (layer.activation_bits() > 0) return static_cast<double>(layer.activation_bits()) / kFp32Bits;
  if (layer.macs() > 0) return static_cast<double>(layer.macs());
  return static_cast<double>(std::max<int64_t>(layer.weight_count(), 1));
}

// The ladder of one (layer, role) from the sensitivity table.
absl::StatusOr<std::vector<Rung>> BuildLadder(const std::vector<TrialOutcome>& outcomes,
                                              const std::string& layer, Role role,
                                              const std::vector<Candidate>& candidates,
                                              double baseline_top1) {
  std::vector<Rung> ladder;
  for (const Candidate& c : candidates) {  // widest first
    ASSIGN_OR_RETURN(const TrialOutcome* o, SingleLayerOutcome(outcomes, layer, role, c.format));
    if (o == nullptr || !o->succeeded || c.bits >= kFp32Bits) continue;
    Rung rung{c.format, c.bits, std::max(0.0, baseline_top1 - o->result.top1())};
    if (!ladder.empty() && ladder.back().bits == rung.bits) {
      if (rung.drop < ladder.back().drop) ladder.back() = rung;
      continue;
    }
    ladder.push_back(rung);
  }
  return ladder;
}

absl::StatusOr<std::string> KnobsConfig(const std::vector<Knob>& knobs) {
  ConfigJson config = ConfigJson::object();
  for (const Knob& k : knobs) {
    if (k.position >= 0) SetLayerRole(config, k.layer, RoleName(k.role), k.ladder[k.position].format);
  }
  return CanonicalConfig(config);
}

absl::StatusOr<std::vector<v1::TrialSpec>> GreedyTrials(const v1::SweepSpec& spec,
                                                        const Baseline& baseline,
                                                        const std::vector<TrialOutcome>& outcomes) {
  ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
  ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
  std::vector<Knob> knobs;
  for (const v1::LayerResult& layer : baseline.layers) {
    Knob w{layer.name(), Role::kWeights, static_cast<double>(layer.weight_count())};
    ASSIGN_OR_RETURN(w.ladder, BuildLadder(outcomes, layer.name(), Role::kWeights, weights,
                                           baseline.top1));
    Knob a{layer.name(), Role::kActivations, ActivationElements(layer)};
    ASSIGN_OR_RETURN(a.ladder, BuildLadder(outcomes, layer.name(), Role::kActivations,
                                           activations, baseline.top1));
    knobs.push_back(std::move(w));
    knobs.push_back(std::move(a));
  }

  const double stop_drop = kStopAtMarginMultiple * ErrorMarginPp(spec) / 100.0;
  size_t max_moves = 0;
  for (const Knob& k : knobs) max_moves += k.ladder.size();
  std::vector<v1::TrialSpec> trials;
  while (trials.size() < max_moves) {
    int best = -1;
    double best_ratio = std::numeric_limits<double>::infinity();
    double best_saved = 0;
    for (int i = 0; i < static_cast<int>(knobs.size()); ++i) {
      const Knob& k = knobs[i];
      if (k.position + 1 >= static_cast<int>(k.ladder.size())) continue;
      const Rung& next = k.ladder[k.position + 1];
      const double saved = k.elements * (k.bits() - next.bits);
      if (!(saved > 0)) continue;
      const double ratio = (next.drop - k.drop()) / saved;
      if (best < 0 || ratio < best_ratio || (ratio == best_ratio && saved > best_saved)) {
        best = i;
        best_ratio = ratio;
        best_saved = saved;
      }
    }
    if (best < 0) break;
    Knob& moved = knobs[best];
    ++moved.position;
    double estimated_drop = 0;
    for (const Knob& k : knobs) estimated_drop += k.drop();
    ASSIGN_OR_RETURN(std::string config, KnobsConfig(knobs));
    const std::string label = absl::StrFormat(
        "greedy step %d: %s %s %s (estimated drop %.2f pp)", trials.size() + 1, moved.layer,
        RoleName(moved.role), moved.ladder[moved.position].format, 100.0 * estimated_drop);
    trials.push_back(MakeTrial(kGreedyStage, label, config));
    if (estimated_drop > stop_drop) break;
  }
  return trials;
}

class SensitivityStrategy : public Strategy {
 public:
  absl::Status Validate(const v1::SweepSpec& spec) const override {
    RETURN_IF_ERROR(ValidateCommon(spec));
    return ValidateCandidateSpace(spec, "sensitivity");
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    ASSIGN_OR_RETURN(BaselineOrStep base, ResolveBaseline(outcomes));
    if (base.step) return *base.step;

    ASSIGN_OR_RETURN(std::optional<PlanStep> table,
                     SensitivityTableStep(spec, base.baseline, outcomes));
    if (table) return *table;

    if (!HasStage(outcomes, kGreedyStage)) {
      ASSIGN_OR_RETURN(std::vector<v1::TrialSpec> greedy,
                       GreedyTrials(spec, base.baseline, outcomes));
      // No move at all (every table trial failed or changed nothing): nothing to fine-tune.
      if (greedy.empty()) return DoneStep();
      return StageStep(kGreedyStage, std::move(greedy));
    }

    if (EffectiveFinetune(spec).steps() > 0 && !HasStage(outcomes, kFinetuneStage)) {
      // The smallest greedy results on the top1-vs-size frontier: the aggressive end of the
      // curve, around and beyond the margin, is where fine-tuning has accuracy to win back.
      return FinetuneStep(spec, CheapestFrontierPoints(OfStage(outcomes, kGreedyStage),
                                                       v1::OBJECTIVE_SIZE, kMaxFinetunePoints));
    }
    return DoneStep();
  }
};

}  // namespace

std::unique_ptr<Strategy> NewSensitivityStrategy() {
  return std::make_unique<SensitivityStrategy>();
}

}  // namespace bitsweep::server::plan
