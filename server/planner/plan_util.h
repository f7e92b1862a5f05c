// Helpers shared by the search strategies (grid.cc, ristretto.cc, sensitivity.cc, random.cc,
// evolutionary.cc): building canonical trial configs, finding the baseline among the outcomes,
// candidate formats ordered by width, per-layer genomes and their deterministic sampling, margin
// checks and spec validation. Internal to bitsweep_planner.
#ifndef BITSWEEP_SERVER_PLANNER_PLAN_UTIL_H_
#define BITSWEEP_SERVER_PLANNER_PLAN_UTIL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitsweep/v1/explorer.pb.h"
#include "common/splitmix64.h"
#include "server/planner/strategy.h"

namespace bitsweep::server::plan {

inline constexpr char kBaselineStage[] = "baseline";
inline constexpr char kFinetuneStage[] = "finetune";
inline constexpr double kDefaultErrorMarginPp = 1.0;

// The factories registry.cc lists (one per strategy file).
std::unique_ptr<Strategy> NewGridStrategy();
std::unique_ptr<Strategy> NewRistrettoStrategy();
std::unique_ptr<Strategy> NewSensitivityStrategy();
std::unique_ptr<Strategy> NewHawqStrategy();
std::unique_ptr<Strategy> NewHawqTableStrategy();
std::unique_ptr<Strategy> NewRandomStrategy();
std::unique_ptr<Strategy> NewEvolutionaryStrategy();

// ---- configs ---------------------------------------------------------------------------------

// A config under construction, in the JSON shape of quant/config.h.
using ConfigJson = nlohmann::json;

// Sets `role` ("weights", "inputs", "outputs", or "activations" = inputs and outputs) of
// `selector` ("default", "conv", "fc", or "layers.NAME") to `format`.
void SetRole(ConfigJson& config, const std::string& selector, const std::string& role,
             const std::string& format);
// Sets a role of one layer (no "layers." prefix: layer names may contain dots).
void SetLayerRole(ConfigJson& config, const std::string& layer, const std::string& role,
                  const std::string& format);
// Parses the config with the engine's own parser and returns its canonical serialization, so
// every emitted config_json is exactly what the worker and the dedup hash see.
absl::StatusOr<std::string> CanonicalConfig(const ConfigJson& config);

v1::TrialSpec MakeTrial(const std::string& stage, const std::string& label,
                        const std::string& canonical_config);
// The trial again, with the sweep's fine-tuning, in stage "finetune".
v1::TrialSpec FinetuneTrial(const v1::TrialSpec& trial, const v1::SweepSpec& spec,
                            const std::string& label);

// The "finetune" step: each of `points` again with the sweep's fine-tuning, labelled "finetune N
// steps: <its label>"; the done step when `points` is empty.
PlanStep FinetuneStep(const v1::SweepSpec& spec, const std::vector<const TrialOutcome*>& points);

// ---- outcomes --------------------------------------------------------------------------------

struct Baseline {
  double top1 = 0;
  std::vector<v1::LayerResult> layers;  // the quantizable layers, in the model's order
};

// Either the step to take now (run the baseline, or fail the sweep because it failed or found
// nothing to quantize) or the baseline's result.
struct BaselineOrStep {
  std::optional<PlanStep> step;
  Baseline baseline;
};
absl::StatusOr<BaselineOrStep> ResolveBaseline(const std::vector<TrialOutcome>& outcomes);

bool HasStage(const std::vector<TrialOutcome>& outcomes, const std::string& stage);
std::vector<const TrialOutcome*> OfStage(const std::vector<TrialOutcome>& outcomes,
                                         const std::string& stage);
// The outcome of `stage` whose config is `canonical_config` (the first), or null.
const TrialOutcome* FindByConfig(const std::vector<TrialOutcome>& outcomes,
                                 const std::string& stage, const std::string& canonical_config);

// The succeeded outcomes among `outcomes` on the top-1-vs-`cost` frontier, cheapest first (ties:
// trial id), at most `max_points` of them: the points the strategies fine-tune.
std::vector<const TrialOutcome*> CheapestFrontierPoints(
    const std::vector<const TrialOutcome*>& outcomes, v1::Objective cost, size_t max_points);

double ErrorMarginPp(const v1::SweepSpec& spec);  // SweepSpec.error_margin, 1.0 when unset
// Succeeded and within the margin (see WithinMargin in server/frontier/frontier.h).
bool Passes(const TrialOutcome& outcome, double baseline_top1, double margin_pp);

PlanStep DoneStep();
// A step of one stage. An empty `trials` is a caller bug: steps that are not done hold trials.
PlanStep StageStep(const std::string& stage, std::vector<v1::TrialSpec> trials);

// ---- candidate formats -----------------------------------------------------------------------

struct Candidate {
  std::string format;  // canonical format string
  int bits = 32;
};
// SearchSpace.weight_formats / activation_formats (default: DefaultWeightFormatsFor(strategy) /
// DefaultActivationFormats(), strategy.h), canonical, sorted widest first
// (stable: equal widths keep the user's order).
absl::StatusOr<std::vector<Candidate>> WeightCandidates(const v1::SweepSpec& spec);
absl::StatusOr<std::vector<Candidate>> ActivationCandidates(const v1::SweepSpec& spec);

// ---- the sensitivity table (sensitivity and hawq) ----------------------------------------------

// Stage of the single-layer trials: one layer at one candidate, the rest of the network fp32.
inline constexpr char kSensitivityStage[] = "sensitivity";

// What a single-layer trial quantizes: a layer's weights, or its activations (what it reads and
// writes: layers.L.inputs and layers.L.outputs together).
enum class Role { kWeights, kActivations };
const char* RoleName(Role role);

absl::StatusOr<std::string> SingleLayerConfig(const std::string& layer, Role role,
                                              const std::string& format);
// The table's step (every baseline layer x every weight candidate, then x every activation
// candidate) when the outcomes have none of it yet; nullopt once it ran.
absl::StatusOr<std::optional<PlanStep>> SensitivityTableStep(
    const v1::SweepSpec& spec, const Baseline& baseline, const std::vector<TrialOutcome>& outcomes);
// The table's outcome for (layer, role, format): null when missing.
absl::StatusOr<const TrialOutcome*> SingleLayerOutcome(const std::vector<TrialOutcome>& outcomes,
                                                       const std::string& layer, Role role,
                                                       const std::string& format);

// ---- per-layer genomes (random and evolutionary search) ---------------------------------------

// One choice per quantizable layer (in the baseline's layer order): an index into the weight
// candidates and one into the activation candidates (inputs and outputs together).
struct LayerChoice {
  int weights = 0;
  int activations = 0;
  bool operator==(const LayerChoice&) const = default;
};
using Genome = std::vector<LayerChoice>;

struct GenomeConfig {
  std::string canonical;    // canonical config JSON
  std::string description;  // "weights conv1 fixed:8, ...; activations conv1 fixed:4, ..."
};
absl::StatusOr<GenomeConfig> ConfigOfGenome(const Genome& genome,
                                            const std::vector<v1::LayerResult>& layers,
                                            const std::vector<Candidate>& weights,
                                            const std::vector<Candidate>& activations);
// The genome of a config that ConfigOfGenome made; nullopt for any other config (a layer
// without both roles, inputs and outputs apart, or a format outside the candidates).
std::optional<Genome> GenomeOfConfig(const std::string& config_json,
                                     const std::vector<v1::LayerResult>& layers,
                                     const std::vector<Candidate>& weights,
                                     const std::vector<Candidate>& activations);

// Draws are deterministic: common/splitmix64.h, seeded from SweepSpec.seed.
using ::bitsweep::SplitMix64;

// A genome whose every choice is uniform over the candidates.
Genome RandomGenome(SplitMix64& rng, size_t layers, size_t weight_candidates,
                    size_t activation_candidates);

// ---- validation ------------------------------------------------------------------------------

// INVALID_ARGUMENT naming `field` when `text` is not a usable search-space format: it must parse,
// carry no fractional length (calibration picks it per layer) and, for activations, be neither
// pow2 nor per-channel int.
absl::Status ValidateSpaceFormat(const std::string& text, const std::string& field,
                                 bool activation);
// Settings every strategy shares: error_margin, finetune, budget.
absl::Status ValidateCommon(const v1::SweepSpec& spec);
// Search budgets (SweepSpec.budget) are at most this many configs.
inline constexpr int64_t kMaxSearchBudget = 10000;
// ristretto, sensitivity, random, evolutionary: weight_formats and activation_formats valid, no
// grid axes.
absl::Status ValidateCandidateSpace(const v1::SweepSpec& spec, const std::string& strategy);
// random, evolutionary: ValidateCommon, ValidateCandidateSpace and a budget of at most
// kMaxSearchBudget.
absl::Status ValidateBudgetedSearch(const v1::SweepSpec& spec, const std::string& strategy);

}  // namespace bitsweep::server::plan

#endif  // BITSWEEP_SERVER_PLANNER_PLAN_UTIL_H_
