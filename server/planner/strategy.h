// Search strategies: how a sweep's spec becomes trials, stage by stage (docs/SERVICE.md, "A
// sweep, step by step"; docs/ARCHITECTURE.md, "A search strategy"). One class per strategy behind this interface; registry.cc maps names to
// factories, so adding a strategy touches its own file and one registry line.
//
// A strategy is a pure function of the sweep spec and the outcomes so far. The coordinator calls
// Next() when the sweep starts (no outcomes) and again each time every trial it was given has
// finished; a restarted coordinator resumes a sweep by calling it with the outcomes in its
// database. Every step's trials are independent and run in parallel.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Strategy> s, MakeStrategy("ristretto"));
//   RETURN_IF_ERROR(s->Validate(spec));                     // at submit time
//   ASSIGN_OR_RETURN(PlanStep step, s->Next(spec, outcomes));
//   if (step.done) ...; else queue(step.trials);
#ifndef BITSWEEP_SERVER_PLANNER_STRATEGY_H_
#define BITSWEEP_SERVER_PLANNER_STRATEGY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bitsweep/v1/explorer.pb.h"

namespace bitsweep::server {

// A finished trial as the planner sees it.
struct TrialOutcome {
  int64_t trial_id = 0;
  v1::TrialSpec spec;       // as the strategy emitted it (stage, label, config, fine-tuning)
  bool succeeded = false;
  v1::TrialResult result;   // when succeeded
  std::string error;        // when failed or cancelled
};

struct PlanStep {
  // The stage that starts with these trials, for people and for the trials' spec.stage. One step
  // may hold several stages' trials when they are independent (ristretto's three width sweeps);
  // then this names the step ("width_sweeps") and each trial keeps its own spec.stage.
  std::string stage;
  std::vector<v1::TrialSpec> trials;  // each with stage, label and canonical config_json set
  bool done = false;                  // no more trials: the sweep is finished
  // Set when the sweep cannot go on (its baseline failed); the sweep fails with this text.
  std::string failure;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  // INVALID_ARGUMENT naming the field when the spec cannot work with this strategy (a grid
  // without axes, an unparsable format string, a pow2 activation format).
  virtual absl::Status Validate(const v1::SweepSpec& spec) const = 0;
  // `outcomes` holds every finished trial of the sweep in trial id order. A step that is not
  // done has at least one trial.
  virtual absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                        const std::vector<TrialOutcome>& outcomes) const = 0;
};

// The candidate formats of ristretto, sensitivity, hawq-table, random and evolutionary (and hawq's
// activations) when the sweep lists none (SearchSpace.weight_formats / activation_formats): every
// width from 8 down to 2 for weights and down to 4 for activations, plus 16, in dynamic fixed
// point. Narrower activations
// than 4 bits cost several points on every zoo model; 16 bits is the safe rung for a sensitive
// layer. Ristretto's own flow tried only 16/8/4/2 (a defect we do not repeat: the width a layer
// can afford is often 5 or 6).
std::vector<std::string> DefaultWeightFormats();
std::vector<std::string> DefaultActivationFormats();
// The default weight candidates of `strategy` (a strategy name): for hawq fixed:16 and asymmetric
// per-channel integers int:8:asym:channel down to int:2:asym:channel (one scale and zero point
// per output channel: on lenet5's fc1 alone, 3 bits cost 0.6 points as int:3:asym:channel
// against 4.0 as fixed:3, 2 bits 2.5 against 40 points; docs/RESULTS.md). hawq predicts every
// candidate's loss from one trial, so it can afford formats the others would have to measure
// layer by layer. Every other strategy: DefaultWeightFormats().
std::vector<std::string> DefaultWeightFormatsFor(absl::string_view strategy);
// The fine-tuning steps of `strategy` when the sweep does not set FinetuneSpec.steps: 1000 for
// hawq, whose trial budget leaves room for fine-tuning its cheapest configs near the error margin
// (at 2-4 bits per-channel weights, 1000 steps bring configs 1-2 points outside the margin back
// within it: docs/RESULTS.md), 0 (none) for every other strategy. FinetuneSpec.steps = 0 turns it
// off.
int64_t DefaultFinetuneStepsFor(absl::string_view strategy);
// The sweep's fine-tuning with the strategy's default filled in (steps always set).
v1::FinetuneSpec EffectiveFinetune(const v1::SweepSpec& spec);

// NOT_FOUND-free: an unknown name is INVALID_ARGUMENT listing the known ones.
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(absl::string_view name);
std::vector<std::string> StrategyNames();

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_PLANNER_STRATEGY_H_
