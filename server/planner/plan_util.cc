// Helpers shared by the search strategies: canonical configs, baseline lookup, candidate formats
// and validation (see plan_util.h).
#include "server/planner/plan_util.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/frontier/frontier.h"
#include "quant/config.h"
#include "quant/format.h"

namespace bitsweep::server::plan {
namespace {

namespace quant = ::bitsweep::quant;

absl::StatusOr<std::vector<Candidate>> Candidates(
    const google::protobuf::RepeatedPtrField<std::string>& requested,
    std::vector<std::string> defaults) {
  std::vector<std::string> texts(requested.begin(), requested.end());
  if (texts.empty()) texts = std::move(defaults);
  std::vector<Candidate> candidates;
  for (const std::string& text : texts) {
    ASSIGN_OR_RETURN(quant::NumberFormat f, quant::ParseFormat(text));
    Candidate c{quant::FormatToString(f), f.bits};
    const bool seen = std::any_of(candidates.begin(), candidates.end(),
                                  [&](const Candidate& o) { return o.format == c.format; });
    if (!seen) candidates.push_back(std::move(c));
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.bits > b.bits; });
  return candidates;
}

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status ValidateFormatList(const google::protobuf::RepeatedPtrField<std::string>& formats,
                                const std::string& field, bool activation) {
  for (int i = 0; i < formats.size(); ++i) {
    RETURN_IF_ERROR(ValidateSpaceFormat(formats[i], absl::StrCat(field, "[", i, "]"), activation));
  }
  return absl::OkStatus();
}

}  // namespace

}  // namespace bitsweep::server::plan

namespace bitsweep::server {

std::vector<std::string> DefaultWeightFormats() {
  return {"fixed:16", "fixed:8", "fixed:7", "fixed:6", "fixed:5", "fixed:4", "fixed:3", "fixed:2"};
}

std::vector<std::string> DefaultWeightFormatsFor(absl::string_view strategy) {
  if (strategy != "hawq") return DefaultWeightFormats();
  std::vector<std::string> formats = {"fixed:16"};
  for (int bits = 8; bits >= 2; --bits) {
    formats.push_back(absl::StrCat("int:", bits, ":asym:channel"));
  }
  return formats;
}

int64_t DefaultFinetuneStepsFor(absl::string_view strategy) {
  return strategy == "hawq" ? 1000 : 0;
}

v1::FinetuneSpec EffectiveFinetune(const v1::SweepSpec& spec) {
  v1::FinetuneSpec finetune = spec.finetune();
  if (!finetune.has_steps()) finetune.set_steps(DefaultFinetuneStepsFor(spec.strategy()));
  return finetune;
}

std::vector<std::string> DefaultActivationFormats() {
  return {"fixed:16", "fixed:8", "fixed:7", "fixed:6", "fixed:5", "fixed:4"};
}

}  // namespace bitsweep::server

namespace bitsweep::server::plan {

void SetRole(ConfigJson& config, const std::string& selector, const std::string& role,
             const std::string& format) {
  if (absl::StartsWith(selector, "layers.")) {
    SetLayerRole(config, selector.substr(7), role, format);
    return;
  }
  if (role == "activations") {
    config[selector]["inputs"] = format;
    config[selector]["outputs"] = format;
  } else {
    config[selector][role] = format;
  }
}

void SetLayerRole(ConfigJson& config, const std::string& layer, const std::string& role,
                  const std::string& format) {
  ConfigJson& roles = config["layers"][layer];
  if (role == "activations") {
    roles["inputs"] = format;
    roles["outputs"] = format;
  } else {
    roles[role] = format;
  }
}

absl::StatusOr<std::string> CanonicalConfig(const ConfigJson& config) {
  std::string text;
  try {
    text = config.is_null() ? std::string("{}") : config.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InternalError(absl::StrCat("cannot serialize a planner config: ", e.what()));
  }
  absl::StatusOr<quant::QuantConfig> parsed = quant::ParseQuantConfig(text);
  if (!parsed.ok()) {
    // The planner built it from validated formats: an error here is a planner bug.
    return absl::InternalError(
        absl::StrCat("planner built an invalid config ", text, ": ", parsed.status().message()));
  }
  return quant::CanonicalJson(*parsed);
}

v1::TrialSpec MakeTrial(const std::string& stage, const std::string& label,
                        const std::string& canonical_config) {
  v1::TrialSpec trial;
  trial.set_stage(stage);
  trial.set_label(label);
  trial.set_config_json(canonical_config);
  return trial;
}

v1::TrialSpec FinetuneTrial(const v1::TrialSpec& trial, const v1::SweepSpec& spec,
                            const std::string& label) {
  v1::TrialSpec tuned = MakeTrial(kFinetuneStage, label, trial.config_json());
  *tuned.mutable_finetune() = EffectiveFinetune(spec);
  return tuned;
}

PlanStep FinetuneStep(const v1::SweepSpec& spec, const std::vector<const TrialOutcome*>& points) {
  if (points.empty()) return DoneStep();
  std::vector<v1::TrialSpec> tuned;
  for (const TrialOutcome* o : points) {
    tuned.push_back(FinetuneTrial(
        o->spec, spec,
        absl::StrCat("finetune ", EffectiveFinetune(spec).steps(), " steps: ", o->spec.label())));
  }
  return StageStep(kFinetuneStage, std::move(tuned));
}

absl::StatusOr<BaselineOrStep> ResolveBaseline(const std::vector<TrialOutcome>& outcomes) {
  BaselineOrStep out;
  std::vector<const TrialOutcome*> runs = OfStage(outcomes, kBaselineStage);
  if (runs.empty()) {
    ASSIGN_OR_RETURN(std::string config, CanonicalConfig(ConfigJson::object()));
    v1::TrialSpec trial = MakeTrial(kBaselineStage, "fp32 baseline", config);
    trial.set_collect_ranges(true);
    out.step = StageStep(kBaselineStage, {trial});
    return out;
  }
  auto succeeded = std::find_if(runs.begin(), runs.end(),
                                [](const TrialOutcome* o) { return o->succeeded; });
  if (succeeded == runs.end()) {
    PlanStep failed;
    const std::string& error = runs.back()->error;
    failed.failure = absl::StrCat("baseline failed: ", error.empty() ? "no error text" : error);
    out.step = failed;
    return out;
  }
  const v1::TrialResult& result = (*succeeded)->result;
  out.baseline.top1 = result.top1();
  out.baseline.layers.assign(result.layers().begin(), result.layers().end());
  if (out.baseline.layers.empty()) {
    PlanStep failed;
    failed.failure =
        "baseline found no quantizable layers (Conv, Gemm or MatMul with constant weights)";
    out.step = failed;
  }
  return out;
}

bool HasStage(const std::vector<TrialOutcome>& outcomes, const std::string& stage) {
  return std::any_of(outcomes.begin(), outcomes.end(),
                     [&](const TrialOutcome& o) { return o.spec.stage() == stage; });
}

std::vector<const TrialOutcome*> OfStage(const std::vector<TrialOutcome>& outcomes,
                                         const std::string& stage) {
  std::vector<const TrialOutcome*> found;
  for (const TrialOutcome& o : outcomes) {
    if (o.spec.stage() == stage) found.push_back(&o);
  }
  return found;
}

const TrialOutcome* FindByConfig(const std::vector<TrialOutcome>& outcomes,
                                 const std::string& stage, const std::string& canonical_config) {
  for (const TrialOutcome& o : outcomes) {
    if (o.spec.stage() == stage && o.spec.config_json() == canonical_config) return &o;
  }
  return nullptr;
}

std::vector<const TrialOutcome*> CheapestFrontierPoints(
    const std::vector<const TrialOutcome*>& outcomes, v1::Objective cost, size_t max_points) {
  std::vector<const TrialOutcome*> succeeded;
  std::vector<std::vector<double>> points;
  for (const TrialOutcome* o : outcomes) {
    if (!o->succeeded) continue;
    succeeded.push_back(o);
    points.push_back({-o->result.top1(), ObjectiveValue(o->result, cost)});
  }
  std::vector<const TrialOutcome*> frontier;
  for (size_t i : NonDominated(points)) frontier.push_back(succeeded[i]);
  std::sort(frontier.begin(), frontier.end(), [cost](const TrialOutcome* a, const TrialOutcome* b) {
    const double ca = ObjectiveValue(a->result, cost), cb = ObjectiveValue(b->result, cost);
    if (ca != cb) return ca < cb;
    return a->trial_id < b->trial_id;
  });
  if (frontier.size() > max_points) frontier.resize(max_points);
  return frontier;
}

double ErrorMarginPp(const v1::SweepSpec& spec) {
  return spec.has_error_margin() ? spec.error_margin() : kDefaultErrorMarginPp;
}

bool Passes(const TrialOutcome& outcome, double baseline_top1, double margin_pp) {
  return outcome.succeeded && WithinMargin(outcome.result.top1(), baseline_top1, margin_pp);
}

PlanStep DoneStep() {
  PlanStep step;
  step.done = true;
  return step;
}

PlanStep StageStep(const std::string& stage, std::vector<v1::TrialSpec> trials) {
  PlanStep step;
  step.stage = stage;
  step.trials = std::move(trials);
  return step;
}

const char* RoleName(Role role) { return role == Role::kWeights ? "weights" : "activations"; }

absl::StatusOr<std::string> SingleLayerConfig(const std::string& layer, Role role,
                                              const std::string& format) {
  ConfigJson config = ConfigJson::object();
  SetLayerRole(config, layer, RoleName(role), format);
  return CanonicalConfig(config);
}

absl::StatusOr<std::optional<PlanStep>> SensitivityTableStep(
    const v1::SweepSpec& spec, const Baseline& baseline, const std::vector<TrialOutcome>& outcomes) {
  if (HasStage(outcomes, kSensitivityStage)) return std::nullopt;
  ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
  ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
  std::vector<v1::TrialSpec> table;
  for (const v1::LayerResult& layer : baseline.layers) {
    for (auto [role, candidates] : {std::pair{Role::kWeights, &weights},
                                    std::pair{Role::kActivations, &activations}}) {
      for (const Candidate& c : *candidates) {
        ASSIGN_OR_RETURN(std::string config, SingleLayerConfig(layer.name(), role, c.format));
        table.push_back(MakeTrial(kSensitivityStage,
                                  absl::StrCat(layer.name(), " ", RoleName(role), " ", c.format),
                                  config));
      }
    }
  }
  return StageStep(kSensitivityStage, std::move(table));
}

absl::StatusOr<const TrialOutcome*> SingleLayerOutcome(const std::vector<TrialOutcome>& outcomes,
                                                       const std::string& layer, Role role,
                                                       const std::string& format) {
  ASSIGN_OR_RETURN(std::string config, SingleLayerConfig(layer, role, format));
  return FindByConfig(outcomes, kSensitivityStage, config);
}

absl::StatusOr<GenomeConfig> ConfigOfGenome(const Genome& genome,
                                            const std::vector<v1::LayerResult>& layers,
                                            const std::vector<Candidate>& weights,
                                            const std::vector<Candidate>& activations) {
  if (genome.size() != layers.size()) {
    return absl::InternalError(absl::StrCat("genome of ", genome.size(), " layers for ",
                                            layers.size(), " quantizable layers"));
  }
  ConfigJson config = ConfigJson::object();
  std::vector<std::string> weight_parts, activation_parts;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Candidate& w = weights.at(genome[i].weights);
    const Candidate& a = activations.at(genome[i].activations);
    SetLayerRole(config, layers[i].name(), "weights", w.format);
    SetLayerRole(config, layers[i].name(), "activations", a.format);
    weight_parts.push_back(absl::StrCat(layers[i].name(), " ", w.format));
    activation_parts.push_back(absl::StrCat(layers[i].name(), " ", a.format));
  }
  GenomeConfig out;
  ASSIGN_OR_RETURN(out.canonical, CanonicalConfig(config));
  out.description = absl::StrCat("weights ", absl::StrJoin(weight_parts, ", "), "; activations ",
                                 absl::StrJoin(activation_parts, ", "));
  return out;
}

std::optional<Genome> GenomeOfConfig(const std::string& config_json,
                                     const std::vector<v1::LayerResult>& layers,
                                     const std::vector<Candidate>& weights,
                                     const std::vector<Candidate>& activations) {
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(config_json);
  if (!config.ok()) return std::nullopt;
  auto index_of = [](const std::vector<Candidate>& candidates,
                     const std::optional<quant::NumberFormat>& format) -> int {
    if (!format.has_value()) return -1;
    const std::string text = quant::FormatToString(*format);
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (candidates[i].format == text) return static_cast<int>(i);
    }
    return -1;
  };
  Genome genome;
  for (const v1::LayerResult& layer : layers) {
    auto roles = config->layers.find(layer.name());
    if (roles == config->layers.end()) return std::nullopt;
    const int w = index_of(weights, roles->second.weights);
    const int in = index_of(activations, roles->second.inputs);
    const int out = index_of(activations, roles->second.outputs);
    if (w < 0 || in < 0 || in != out) return std::nullopt;
    genome.push_back({w, in});
  }
  return genome;
}

Genome RandomGenome(SplitMix64& rng, size_t layers, size_t weight_candidates,
                    size_t activation_candidates) {
  Genome genome(layers);
  for (LayerChoice& choice : genome) {
    choice.weights = static_cast<int>(rng.Below(weight_candidates));
    choice.activations = static_cast<int>(rng.Below(activation_candidates));
  }
  return genome;
}

absl::StatusOr<std::vector<Candidate>> WeightCandidates(const v1::SweepSpec& spec) {
  return Candidates(spec.space().weight_formats(), DefaultWeightFormatsFor(spec.strategy()));
}

absl::StatusOr<std::vector<Candidate>> ActivationCandidates(const v1::SweepSpec& spec) {
  return Candidates(spec.space().activation_formats(), DefaultActivationFormats());
}

absl::Status ValidateSpaceFormat(const std::string& text, const std::string& field,
                                 bool activation) {
  absl::StatusOr<quant::NumberFormat> format = quant::ParseFormat(text);
  if (!format.ok()) return Invalid(field, std::string(format.status().message()));
  if (format->fractional_bits.has_value()) {
    return Invalid(field, absl::StrCat("'", text,
                                       "' fixes the fractional length; search spaces leave it to "
                                       "calibration (write it without the last ':FL')"));
  }
  if (activation && format->kind == quant::FormatKind::kPow2) {
    return Invalid(field, absl::StrCat("'", text,
                                       "': pow2 is a weight format (activations need fixed, "
                                       "ufixed, minifloat, int or fp32)"));
  }
  if (activation && format->kind == quant::FormatKind::kInt && format->per_channel) {
    return Invalid(field, absl::StrCat("'", text, "': per-channel int is for weights only"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCommon(const v1::SweepSpec& spec) {
  if (spec.has_error_margin() && !(std::isfinite(spec.error_margin()) && spec.error_margin() >= 0)) {
    return Invalid("error_margin", absl::StrCat(spec.error_margin(),
                                                " is not a top-1 drop in percentage points >= 0"));
  }
  const v1::FinetuneSpec& ft = spec.finetune();
  if (ft.steps() < 0) return Invalid("finetune.steps", absl::StrCat(ft.steps(), " is negative"));
  if (!(std::isfinite(ft.learning_rate()) && ft.learning_rate() >= 0)) {
    return Invalid("finetune.learning_rate", absl::StrCat(ft.learning_rate(), " is not >= 0"));
  }
  if (ft.batch() < 0) return Invalid("finetune.batch", absl::StrCat(ft.batch(), " is negative"));
  if (spec.budget() < 0) return Invalid("budget", absl::StrCat(spec.budget(), " is negative"));
  return absl::OkStatus();
}

absl::Status ValidateCandidateSpace(const v1::SweepSpec& spec, const std::string& strategy) {
  if (spec.space().axes_size() > 0) {
    return Invalid("space.axes", absl::StrCat("only the grid strategy uses axes; ", strategy,
                                              " searches space.weight_formats and "
                                              "space.activation_formats"));
  }
  RETURN_IF_ERROR(ValidateFormatList(spec.space().weight_formats(), "space.weight_formats",
                                     /*activation=*/false));
  RETURN_IF_ERROR(ValidateFormatList(spec.space().activation_formats(),
                                     "space.activation_formats", /*activation=*/true));
  return absl::OkStatus();
}

absl::Status ValidateBudgetedSearch(const v1::SweepSpec& spec, const std::string& strategy) {
  RETURN_IF_ERROR(ValidateCommon(spec));
  RETURN_IF_ERROR(ValidateCandidateSpace(spec, strategy));
  if (spec.budget() > kMaxSearchBudget) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget: ", spec.budget(), " is more than ", kMaxSearchBudget, " trials"));
  }
  return absl::OkStatus();
}

}  // namespace bitsweep::server::plan
