// The ristretto strategy: Ristretto's flow (Gysel et al. 2016) on top of the fp32 baseline.
//
//   step "width_sweeps": three independent stages run together, each with the rest of the
//     network in fp32: "conv_weights" (every weight candidate on all conv weights),
//     "fc_weights" (the same on all fc weights; skipped when the model has no fc layer; likewise
//     conv_weights without conv layers) and "activations" (every activation candidate on all
//     layers' inputs and outputs).
//   stage "combined": each group at its narrowest candidate within the error margin (a group
//     with none stays fp32). Unlike the original, the combination is re-checked: while it misses
//     the margin, the group whose own sweep result at its chosen width lost the most accuracy
//     moves to the next wider candidate and the combination runs again ("combined" once more,
//     labelled "retry N"), until it passes or no group can widen. When every group stayed fp32
//     there is nothing to combine and the sweep ends after the width sweeps.
//   stage "finetune": the final combination with SweepSpec.finetune, when finetune.steps > 0.
//
// Stateless: the chain of combinations is replayed from the outcomes on every call.
#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/planner/plan_util.h"

namespace bitsweep::server::plan {
namespace {

constexpr char kWidthSweepsStep[] = "width_sweeps";
constexpr char kConvStage[] = "conv_weights";
constexpr char kFcStage[] = "fc_weights";
constexpr char kActivationStage[] = "activations";
constexpr char kCombinedStage[] = "combined";

// One of Ristretto's three groups: which layers' which roles share one uniform format.
struct Group {
  std::string stage;        // its width sweep
  std::string short_name;   // in combined labels: "conv w"
  std::string long_name;    // in sweep labels: "conv weights"
  std::string selector;     // "conv", "fc", "default"
  std::string role;         // "weights" or "activations"
  std::vector<Candidate> candidates;  // widest first
  // Filled from the sweep's outcomes:
  std::vector<const TrialOutcome*> results;  // parallel to candidates (null: missing)
  int chosen = -1;                           // index into candidates; -1: fp32
};

void ApplyGroup(ConfigJson& config, const Group& group, const std::string& format) {
  SetRole(config, group.selector, group.role, format);
}

absl::StatusOr<std::string> GroupSweepConfig(const Group& group, const Candidate& c) {
  ConfigJson config = ConfigJson::object();
  ApplyGroup(config, group, c.format);
  return CanonicalConfig(config);
}

// The groups this model has, in the order conv, fc, activations.
absl::StatusOr<std::vector<Group>> MakeGroups(const v1::SweepSpec& spec, const Baseline& baseline) {
  ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
  ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
  const bool has_conv = std::any_of(baseline.layers.begin(), baseline.layers.end(),
                                    [](const v1::LayerResult& l) { return l.layer_class() == "conv"; });
  const bool has_fc = std::any_of(baseline.layers.begin(), baseline.layers.end(),
                                  [](const v1::LayerResult& l) { return l.layer_class() == "fc"; });
  std::vector<Group> groups;
  if (has_conv) groups.push_back({kConvStage, "conv w", "conv weights", "conv", "weights", weights});
  if (has_fc) groups.push_back({kFcStage, "fc w", "fc weights", "fc", "weights", weights});
  groups.push_back({kActivationStage, "act", "activations", "default", "activations", activations});
  return groups;
}

// The combination: every group at its `chosen` candidate (or fp32).
absl::StatusOr<std::string> CombinedConfig(const std::vector<Group>& groups) {
  ConfigJson config = ConfigJson::object();
  for (const Group& g : groups) {
    if (g.chosen >= 0) ApplyGroup(config, g, g.candidates[g.chosen].format);
  }
  return CanonicalConfig(config);
}

std::string CombinationText(const std::vector<Group>& groups) {
  std::vector<std::string> parts;
  for (const Group& g : groups) {
    parts.push_back(absl::StrCat(g.short_name, " ",
                                 g.chosen >= 0 ? g.candidates[g.chosen].format : "fp32"));
  }
  return absl::StrJoin(parts, ", ");
}

// Accuracy the group lost in its own sweep at its chosen width (infinite when that trial
// failed, so a failed width is the first to be widened).
double OwnDrop(const Group& g, double baseline_top1) {
  const TrialOutcome* o = g.results[g.chosen];
  if (o == nullptr || !o->succeeded) return std::numeric_limits<double>::infinity();
  return baseline_top1 - o->result.top1();
}

// Widens the group that lost the most in its own sweep; its index, or -1 when none can widen.
int WidenWorstGroup(std::vector<Group>& groups, double baseline_top1) {
  int worst = -1;
  double worst_drop = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < static_cast<int>(groups.size()); ++i) {
    if (groups[i].chosen <= 0) continue;  // fp32 or already the widest candidate
    const double drop = OwnDrop(groups[i], baseline_top1);
    if (drop > worst_drop) {
      worst_drop = drop;
      worst = i;
    }
  }
  if (worst >= 0) --groups[worst].chosen;
  return worst;
}

class RistrettoStrategy : public Strategy {
 public:
  absl::Status Validate(const v1::SweepSpec& spec) const override {
    RETURN_IF_ERROR(ValidateCommon(spec));
    return ValidateCandidateSpace(spec, "ristretto");
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    ASSIGN_OR_RETURN(BaselineOrStep base, ResolveBaseline(outcomes));
    if (base.step) return *base.step;
    const double baseline_top1 = base.baseline.top1;
    const double margin = ErrorMarginPp(spec);
    ASSIGN_OR_RETURN(std::vector<Group> groups, MakeGroups(spec, base.baseline));

    // Step 1: the three width sweeps, together.
    const bool swept = HasStage(outcomes, kConvStage) || HasStage(outcomes, kFcStage) ||
                       HasStage(outcomes, kActivationStage);
    if (!swept) {
      PlanStep step = StageStep(kWidthSweepsStep, {});
      for (const Group& g : groups) {
        for (const Candidate& c : g.candidates) {
          ASSIGN_OR_RETURN(std::string config, GroupSweepConfig(g, c));
          step.trials.push_back(
              MakeTrial(g.stage, absl::StrCat(g.long_name, " ", c.format), config));
        }
      }
      return step;
    }

    // Each group's narrowest passing candidate (ties in width: the more accurate).
    for (Group& g : groups) {
      for (const Candidate& c : g.candidates) {
        ASSIGN_OR_RETURN(std::string config, GroupSweepConfig(g, c));
        g.results.push_back(FindByConfig(outcomes, g.stage, config));
      }
      for (int i = 0; i < static_cast<int>(g.candidates.size()); ++i) {
        const TrialOutcome* o = g.results[i];
        if (o == nullptr || !Passes(*o, baseline_top1, margin)) continue;
        if (g.chosen < 0 || g.candidates[i].bits < g.candidates[g.chosen].bits ||
            (g.candidates[i].bits == g.candidates[g.chosen].bits &&
             o->result.top1() > g.results[g.chosen]->result.top1())) {
          g.chosen = i;
        }
      }
    }
    if (std::all_of(groups.begin(), groups.end(), [](const Group& g) { return g.chosen < 0; })) {
      return DoneStep();  // nothing passed on its own: nothing to combine
    }

    // Step 2: replay the chain of combinations the earlier calls emitted.
    std::vector<const TrialOutcome*> combined = OfStage(outcomes, kCombinedStage);
    std::string widened_note;
    std::optional<v1::TrialSpec> final_combination;
    for (size_t attempt = 0;; ++attempt) {
      ASSIGN_OR_RETURN(std::string config, CombinedConfig(groups));
      const std::string text = CombinationText(groups);
      const std::string label =
          attempt == 0 ? absl::StrCat("combined: ", text)
                       : absl::StrCat("combined retry ", attempt, " (", widened_note, "): ", text);
      if (attempt >= combined.size()) {
        return StageStep(kCombinedStage, {MakeTrial(kCombinedStage, label, config)});
      }
      const TrialOutcome& outcome = *combined[attempt];
      const int widened = Passes(outcome, baseline_top1, margin)
                              ? -1
                              : WidenWorstGroup(groups, baseline_top1);
      if (widened < 0) {  // passed, or nothing left to widen
        final_combination = outcome.spec;
        break;
      }
      widened_note = absl::StrCat("widened ", groups[widened].short_name, " to ",
                                  groups[widened].candidates[groups[widened].chosen].format);
    }

    // Step 3: fine-tune the final combination.
    if (EffectiveFinetune(spec).steps() > 0 && !HasStage(outcomes, kFinetuneStage)) {
      return StageStep(kFinetuneStage,
                       {FinetuneTrial(*final_combination, spec,
                                      absl::StrCat("finetune ", EffectiveFinetune(spec).steps(),
                                                   " steps: ", final_combination->label()))});
    }
    return DoneStep();
  }
};

}  // namespace

std::unique_ptr<Strategy> NewRistrettoStrategy() { return std::make_unique<RistrettoStrategy>(); }

}  // namespace bitsweep::server::plan
