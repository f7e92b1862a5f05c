// The random strategy: the fp32 baseline, then SweepSpec.budget (0: 32) distinct configs in one
// stage "random", each layer's weights and activations (inputs and outputs together) drawn
// uniformly from the candidate formats. For spaces too large for grid or sensitivity.
//
// Sampling is deterministic (same seed, model and candidates -> the same configs: SplitMix64 in
// plan_util.h, seeded by SweepSpec.seed). Duplicate draws are discarded
// and drawing continues until the budget is met or 20 x budget draws were made (a space smaller
// than the budget yields every config it has, fewer than the budget).
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/planner/plan_util.h"

namespace bitsweep::server::plan {
namespace {

constexpr char kRandomStage[] = "random";
constexpr int64_t kDefaultBudget = 32;
constexpr int64_t kDrawsPerTrial = 20;

class RandomStrategy : public Strategy {
 public:
  absl::Status Validate(const v1::SweepSpec& spec) const override {
    return ValidateBudgetedSearch(spec, "random");
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    ASSIGN_OR_RETURN(BaselineOrStep base, ResolveBaseline(outcomes));
    if (base.step) return *base.step;
    if (HasStage(outcomes, kRandomStage)) return DoneStep();

    ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
    ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
    const int64_t budget = spec.budget() > 0 ? spec.budget() : kDefaultBudget;
    SplitMix64 rng(spec.seed());
    std::set<std::string> seen;
    std::vector<v1::TrialSpec> trials;
    for (int64_t draw = 0; draw < budget * kDrawsPerTrial &&
                           static_cast<int64_t>(trials.size()) < budget;
         ++draw) {
      const Genome genome =
          RandomGenome(rng, base.baseline.layers.size(), weights.size(), activations.size());
      ASSIGN_OR_RETURN(GenomeConfig config,
                       ConfigOfGenome(genome, base.baseline.layers, weights, activations));
      if (!seen.insert(config.canonical).second) continue;
      trials.push_back(MakeTrial(
          kRandomStage, absl::StrCat("random ", trials.size() + 1, ": ", config.description),
          config.canonical));
    }
    return StageStep(kRandomStage, std::move(trials));
  }
};

}  // namespace

std::unique_ptr<Strategy> NewRandomStrategy() { return std::make_unique<RandomStrategy>(); }

}  // namespace bitsweep::server::plan
