// The random strategy: the fp32 baseline, then SweepSpec.budget (0: 32) distinct configs in one
// stage "random", each layer's weights and activations (inputs and outputs together) drawn
// uniformly from the candidate formats. For spaces too large for grid or sensitivity.
//
// Sampling is deterministic (same seed, model and candidates -> the same configs): a SplitMix64
// generator seeded by SweepSpec.seed and an unbiased bounded draw, written out here because the
// standard distributions differ between library implementations. Duplicate draws are discarded
// and drawing continues until the budget is met or 20 x budget draws were made (a space smaller
// than the budget yields every config it has, fewer than the budget).
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/planner/plan_util.h"

namespace bitsweep::server::plan {
namespace {

constexpr char kRandomStage[] = "random";
constexpr int64_t kDefaultBudget = 32;
constexpr int64_t kMaxBudget = 10000;
constexpr int64_t kDrawsPerTrial = 20;

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), by rejection (no modulo bias).
  uint64_t Below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do { x = Next(); } while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

class RandomStrategy : public Strategy {
 public:
  absl::Status Validate(const v1::SweepSpec& spec) const override {
    RETURN_IF_ERROR(ValidateCommon(spec));
    RETURN_IF_ERROR(ValidateCandidateSpace(spec, "random"));
    if (spec.budget() > kMaxBudget) {
      return absl::InvalidArgumentError(
          absl::StrCat("budget: ", spec.budget(), " is more than ", kMaxBudget, " trials"));
    }
    return absl::OkStatus();
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
      ConfigJson config = ConfigJson::object();
      std::vector<std::string> weight_parts, activation_parts;
      for (const v1::LayerResult& layer : base.baseline.layers) {
        const Candidate& w = weights[rng.Below(weights.size())];
        const Candidate& a = activations[rng.Below(activations.size())];
        SetLayerRole(config, layer.name(), "weights", w.format);
        SetLayerRole(config, layer.name(), "activations", a.format);
        weight_parts.push_back(absl::StrCat(layer.name(), " ", w.format));
        activation_parts.push_back(absl::StrCat(layer.name(), " ", a.format));
      }
      ASSIGN_OR_RETURN(std::string canonical, CanonicalConfig(config));
      if (!seen.insert(canonical).second) continue;
      const std::string label =
          absl::StrCat("random ", trials.size() + 1, ": weights ", absl::StrJoin(weight_parts, ", "),
                       "; activations ", absl::StrJoin(activation_parts, ", "));
      trials.push_back(MakeTrial(kRandomStage, label, canonical));
    }
    return StageStep(kRandomStage, std::move(trials));
  }
};

}  // namespace

std::unique_ptr<Strategy> NewRandomStrategy() { return std::make_unique<RandomStrategy>(); }

}  // namespace bitsweep::server::plan
