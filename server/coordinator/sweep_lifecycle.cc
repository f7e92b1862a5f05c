// A sweep's life: submit (checked, planned, its first trials inserted), advance (the strategy's
// next step once a step's trials are done), end, cancel and resume.
#include "server/coordinator/sqlite_coordinator.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "quant/config.h"
#include "server/coordinator/dedup.h"
#include "server/coordinator/request_checks.h"
#include "server/frontier/frontier.h"

namespace bitsweep::server::coordinator_internal {

namespace {

// A planner that keeps emitting steps whose trials are all cached would loop without bound.
constexpr int kMaxImmediateSteps = 1000;

}  // namespace

absl::StatusOr<v1::Sweep> SqliteCoordinator::SubmitSweep(const v1::SweepSpec& spec) {
  // Validation that needs no lock first.
  if (spec.settings().dataset().eval().empty()) {
    return absl::InvalidArgumentError(
        "settings.dataset.eval: required (the evaluation split, e.g. "
        "'idx:/usr/share/datasets/fashion-mnist/t10k')");
  }
  if (spec.has_error_margin() && !(spec.error_margin() >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("error_margin: must be >= 0 percentage points, got ", spec.error_margin()));
  }
  if (spec.max_attempts() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_attempts: must be >= 0, got ", spec.max_attempts()));
  }
  if (spec.budget() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("budget: must be >= 0, got ", spec.budget()));
  }
  RETURN_IF_ERROR(CheckSpecLimits(spec));
  // Normalisation values per channel must fit the model (one value serves every channel).
  ASSIGN_OR_RETURN(std::optional<int64_t> channels, InputChannelsOf(spec.model_hash()));
  if (channels.has_value()) {
    const v1::DatasetRef& dataset = spec.settings().dataset();
    for (auto [field, count] : {std::pair{"mean", dataset.mean_size()},
                                std::pair{"std", dataset.std_size()}}) {
      if (count > 1 && count != *channels) {
        return absl::InvalidArgumentError(absl::StrCat(
            "settings.dataset.", field, ": ", count, " values, but the model's input has ",
            *channels, " channel", *channels == 1 ? "" : "s",
            " (give one value per channel, or one for all)"));
      }
    }
  }
  {
    absl::StatusOr<std::vector<v1::Objective>> objectives = SweepObjectives(spec);
    if (!objectives.ok()) return Annotate(objectives.status(), "objectives");
  }

  absl::MutexLock lock(&mu_);
  absl::StatusOr<const Strategy*> strategy = StrategyFor(spec.strategy());
  if (!strategy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy: ", strategy.status().message()));
  }
  RETURN_IF_ERROR((*strategy)->Validate(spec));

  const int64_t now_ms = NowMs();
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(std::optional<int64_t> model_known,
                   QueryInt("SELECT 1 FROM models WHERE hash = ?1", spec.model_hash()));
  if (!model_known.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model_hash: no model '", spec.model_hash(), "' was uploaded (UploadModel first)"));
  }
  std::string spec_json;
  {
    google::protobuf::util::JsonPrintOptions json_options;
    json_options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(spec, &spec_json, json_options).ok()) {
      spec_json = "{}";  // only for people; the proto bytes are what counts
    }
  }
  const double error_margin = spec.has_error_margin() ? spec.error_margin()
                                                      : kDefaultErrorMarginPp;
  const int max_attempts = spec.max_attempts() > 0 ? spec.max_attempts() : kDefaultMaxAttempts;
  RETURN_IF_ERROR(Exec(
      "INSERT INTO sweeps(name, model_hash, strategy, dataset_eval, error_margin, max_attempts, "
      "spec_proto, spec_json, state, created_ms, updated_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9, ?9)",
      spec.name(), spec.model_hash(), spec.strategy(), spec.settings().dataset().eval(),
      error_margin, static_cast<int64_t>(max_attempts), Blob{spec.SerializeAsString()},
      spec_json, now_ms));
  const int64_t sweep_id = db_->LastInsertRowId();
  effects.touched_sweeps.insert(sweep_id);
  absl::Status status = AdvanceSweep(sweep_id, /*at_submit=*/true, now_ms, effects);
  if (status.ok()) status = Commit(txn, effects);
  if (!status.ok()) {
    // Rolled back: the id may be reused by the next sweep, so forget what was cached for it.
    sweeps_.erase(sweep_id);
    return status;
  }
  return BuildSweep(sweep_id);
}

absl::StatusOr<std::vector<PreparedTrial>> SqliteCoordinator::PrepareTrials(
    const SweepInfo& sweep, PlanStep& step) {
  std::vector<PreparedTrial> prepared;
  prepared.reserve(step.trials.size());
  for (size_t i = 0; i < step.trials.size(); ++i) {
    PreparedTrial trial;
    trial.spec = std::move(step.trials[i]);
    if (trial.spec.stage().empty()) trial.spec.set_stage(step.stage);
    absl::StatusOr<quant::QuantConfig> config =
        quant::ParseQuantConfig(trial.spec.config_json());
    if (!config.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stage '", trial.spec.stage(), "' trial ", i, " ('", trial.spec.label(),
          "'): config_json: ", config.status().message()));
    }
    trial.canonical_config = quant::CanonicalJson(*config);
    trial.config_hash = quant::ConfigHash(*config);
    trial.dedup_key = TrialDedupKey(sweep.spec.model_hash(), sweep.spec.settings(),
                                    trial.config_hash, trial.spec);
    prepared.push_back(std::move(trial));
  }
  return prepared;
}

absl::Status SqliteCoordinator::InsertTrial(const SweepInfo& sweep, int64_t step_no,
                                            const PreparedTrial& trial, int64_t now_ms,
                                            Effects& effects) {
  static constexpr absl::string_view kInsert =
      "INSERT INTO trials(sweep_id, step, stage, label, spec_proto, config_json, config_hash, "
      "dedup_key, state, cached, cached_from, duplicate_of, created_ms, finished_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
  const std::string spec_bytes = trial.spec.SerializeAsString();
  // Already evaluated (in any sweep): reuse the result, nothing runs.
  std::optional<int64_t> evaluated;
  if (!sweep.spec.no_cache()) {
    ASSIGN_OR_RETURN(evaluated,
                     QueryInt("SELECT trial_id FROM results WHERE dedup_key = ?1 "
                              "AND invalidated_ms IS NULL ORDER BY trial_id LIMIT 1",
                              trial.dedup_key));
  }
  if (evaluated.has_value()) {
    RETURN_IF_ERROR(Exec(kInsert, sweep.id, step_no, trial.spec.stage(), trial.spec.label(),
                         Blob{spec_bytes}, trial.canonical_config, trial.config_hash,
                         trial.dedup_key, "succeeded", int64_t{1}, *evaluated, nullptr, now_ms,
                         now_ms));
    const int64_t trial_id = db_->LastInsertRowId();
    effects.trial_delta[v1::TRIAL_SUCCEEDED] += 1;
    return OnTrialSucceeded(sweep.id, trial_id, trial.spec.stage(), *evaluated, effects);
  }
  // Being evaluated right now: wait for that one instead of running it twice.
  std::optional<int64_t> original;
  if (!sweep.spec.no_cache()) {
    ASSIGN_OR_RETURN(original,
                     QueryInt("SELECT id FROM trials WHERE dedup_key = ?1 "
                              "AND state IN ('queued', 'running') AND duplicate_of IS NULL "
                              "ORDER BY id LIMIT 1",
                              trial.dedup_key));
  }
  RETURN_IF_ERROR(Exec(kInsert, sweep.id, step_no, trial.spec.stage(), trial.spec.label(),
                       Blob{spec_bytes}, trial.canonical_config, trial.config_hash,
                       trial.dedup_key, "queued", int64_t{0}, nullptr, original, now_ms,
                       nullptr));
  effects.trial_delta[v1::TRIAL_QUEUED] += 1;
  if (!original.has_value()) effects.work_queued = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TrialOutcome>> SqliteCoordinator::LoadOutcomes(int64_t sweep_id) {
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT t.id, t.spec_proto, t.state, t.error, r.result_proto "
                                "FROM trials t LEFT JOIN results r "
                                "ON r.trial_id = coalesce(t.cached_from, t.id) "
                                "AND t.state = 'succeeded' "
                                "WHERE t.sweep_id = ?1 "
                                "AND t.state IN ('succeeded', 'failed', 'cancelled') "
                                "ORDER BY t.id"));
  select.Bind(1, sweep_id);
  std::vector<TrialOutcome> outcomes;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    TrialOutcome outcome;
    outcome.trial_id = select.Int64(0);
    if (!outcome.spec.ParseFromString(select.BlobColumn(1))) {
      return absl::InternalError(
          absl::StrCat("trial ", outcome.trial_id, ": stored spec is corrupt"));
    }
    outcome.succeeded = StateFromName(select.Text(2)) == v1::TRIAL_SUCCEEDED;
    outcome.error = select.Text(3);
    if (outcome.succeeded && !outcome.result.ParseFromString(select.BlobColumn(4))) {
      return absl::InternalError(
          absl::StrCat("trial ", outcome.trial_id, ": stored result is corrupt"));
    }
    if (outcome.succeeded) outcome.error.clear();
    outcomes.push_back(std::move(outcome));
  }
  return outcomes;
}

absl::Status SqliteCoordinator::EndSweep(int64_t sweep_id, int state, absl::string_view error,
                                         int64_t now_ms, Effects& effects) {
  RETURN_IF_ERROR(Exec("UPDATE sweeps SET state = ?2, error = ?3, finished_ms = ?4 WHERE id = ?1",
                       sweep_id, StateName(state), error, now_ms));
  effects.touched_sweeps.insert(sweep_id);
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::AdvanceSweep(int64_t sweep_id, bool at_submit, int64_t now_ms,
                                             Effects& effects) {
  ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(sweep_id));
  for (int steps = 0; steps < kMaxImmediateSteps; ++steps) {
    int64_t step_no = 0;
    {
      ASSIGN_OR_RETURN(Statement select,
                       db_->Prepare("SELECT state, step FROM sweeps WHERE id = ?1"));
      select.Bind(1, sweep_id);
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
      const int state = StateFromName(select.Text(0));
      if (state != v1::SWEEP_QUEUED && state != v1::SWEEP_RUNNING) return absl::OkStatus();
      step_no = select.Int64(1);
    }
    ASSIGN_OR_RETURN(std::optional<int64_t> unfinished,
                     QueryInt("SELECT EXISTS(SELECT 1 FROM trials WHERE sweep_id = ?1 "
                              "AND state IN ('queued', 'running'))",
                              sweep_id));
    if (unfinished.value_or(0) != 0) return absl::OkStatus();

    // The current step is over.
    if (step_no > 0) {
      ASSIGN_OR_RETURN(std::optional<int64_t> started_ms,
                       QueryInt("SELECT started_ms FROM sweep_stages WHERE sweep_id = ?1 "
                                "AND step = ?2 AND finished_ms IS NULL",
                                sweep_id, step_no));
      if (started_ms.has_value()) {
        RETURN_IF_ERROR(Exec("UPDATE sweep_stages SET finished_ms = ?3 WHERE sweep_id = ?1 "
                             "AND step = ?2",
                             sweep_id, step_no, now_ms));
        effects.stage_durations.push_back((now_ms - *started_ms) / 1000.0);
      }
    }
    effects.touched_sweeps.insert(sweep_id);

    absl::StatusOr<const Strategy*> strategy = StrategyFor(sweep->spec.strategy());
    if (!strategy.ok()) {
      if (at_submit) return strategy.status();
      return EndSweep(sweep_id, v1::SWEEP_FAILED,
                      absl::StrCat("planner: ", strategy.status().message()), now_ms, effects);
    }
    effects.planned = true;
    absl::StatusOr<PlanStep> step;
    {
      // Every outcome of the sweep, freed as soon as the strategy has seen them.
      ASSIGN_OR_RETURN(std::vector<TrialOutcome> outcomes, LoadOutcomes(sweep_id));
      step = (*strategy)->Next(sweep->spec, outcomes);
    }
    if (!step.ok()) {
      if (at_submit) return step.status();
      return EndSweep(sweep_id, v1::SWEEP_FAILED,
                      absl::StrCat("planner: ", step.status().message()), now_ms, effects);
    }
    if (!step->failure.empty()) {
      return EndSweep(sweep_id, v1::SWEEP_FAILED, step->failure, now_ms, effects);
    }
    if (step->done) return EndSweep(sweep_id, v1::SWEEP_SUCCEEDED, "", now_ms, effects);
    if (step->trials.empty()) {
      const std::string error =
          absl::StrCat("planner: step '", step->stage, "' has no trials and is not done");
      if (at_submit) return absl::InternalError(error);
      return EndSweep(sweep_id, v1::SWEEP_FAILED, error, now_ms, effects);
    }
    absl::StatusOr<std::vector<PreparedTrial>> trials = PrepareTrials(*sweep, *step);
    step->trials.clear();
    step->trials.shrink_to_fit();
    if (!trials.ok()) {
      if (at_submit) return trials.status();
      return EndSweep(sweep_id, v1::SWEEP_FAILED,
                      absl::StrCat("planner: ", trials.status().message()), now_ms, effects);
    }
    ++step_no;
    RETURN_IF_ERROR(Exec("INSERT INTO sweep_stages(sweep_id, step, stage, trials, started_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
                         sweep_id, step_no, step->stage, static_cast<int64_t>(trials->size()),
                         now_ms));
    RETURN_IF_ERROR(Exec("UPDATE sweeps SET step = ?2, stage = ?3 WHERE id = ?1", sweep_id,
                         step_no, step->stage));
    for (const PreparedTrial& trial : *trials) {
      RETURN_IF_ERROR(InsertTrial(*sweep, step_no, trial, now_ms, effects));
    }
    // Loop: if every trial of the step was cached, the step is already over.
  }
  return EndSweep(sweep_id, v1::SWEEP_FAILED,
                  absl::StrCat("planner: no trial to run after ", kMaxImmediateSteps,
                               " steps whose trials were all cached"),
                  now_ms, effects);
}

absl::StatusOr<v1::Sweep> SqliteCoordinator::CancelSweep(int64_t sweep_id) {
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = NowMs();
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(v1::Sweep sweep, BuildSweep(sweep_id));
  if (sweep.state() != v1::SWEEP_QUEUED && sweep.state() != v1::SWEEP_RUNNING) {
    return sweep;  // finished: cancelling is a no-op
  }
  std::vector<std::pair<int64_t, int>> cancelled;  // trial id, previous state
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, state, lease_id FROM trials WHERE sweep_id = ?1 "
                                  "AND state IN ('queued', 'running') ORDER BY id"));
    select.Bind(1, sweep_id);
    std::vector<std::string> live_leases;
    RETURN_IF_ERROR(select.ForEachRow([&] {
      const int state = StateFromName(select.Text(1));
      cancelled.emplace_back(select.Int64(0), state);
      if (state == v1::TRIAL_RUNNING && !select.IsNull(2)) live_leases.push_back(select.Text(2));
    }));
    // Workers holding these learn it from their next heartbeat.
    for (const std::string& lease_id : live_leases) {
      RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'cancelled', ended_ms = ?2 "
                           "WHERE id = ?1 AND outcome IS NULL",
                           lease_id, now_ms));
    }
  }
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'cancelled', finished_ms = ?2, "
                       "lease_deadline_ms = NULL, duplicate_of = NULL, "
                       "error = CASE WHEN error = '' THEN 'sweep cancelled' ELSE error END "
                       "WHERE sweep_id = ?1 AND state IN ('queued', 'running')",
                       sweep_id, now_ms));
  for (const auto& [trial_id, state] : cancelled) {
    effects.Move(state, v1::TRIAL_CANCELLED);
    RETURN_IF_ERROR(PromoteDuplicates(trial_id, effects));  // identical trials of other sweeps
  }
  RETURN_IF_ERROR(EndSweep(sweep_id, v1::SWEEP_CANCELLED, "", now_ms, effects));
  RETURN_IF_ERROR(Commit(txn, effects));
  return BuildSweep(sweep_id);
}

absl::StatusOr<v1::Sweep> SqliteCoordinator::ResumeSweep(int64_t sweep_id) {
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = NowMs();
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(v1::Sweep sweep, BuildSweep(sweep_id));
  if (sweep.state() != v1::SWEEP_FAILED && sweep.state() != v1::SWEEP_CANCELLED) {
    return absl::FailedPreconditionError(
        absl::StrCat("sweep ", sweep_id, " is ", StateName(sweep.state()),
                     ": only a failed or cancelled sweep can be resumed"));
  }
  std::vector<std::pair<int64_t, int>> requeued;  // trial id, previous state
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, state FROM trials WHERE sweep_id = ?1 "
                                  "AND state IN ('failed', 'cancelled') ORDER BY id"));
    select.Bind(1, sweep_id);
    RETURN_IF_ERROR(select.ForEachRow([&] {
      requeued.emplace_back(select.Int64(0), StateFromName(select.Text(1)));
    }));
  }
  // Fresh attempts; the last error stays readable until the trial runs again.
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', attempts = 0, lost_leases = 0, "
                       "finished_ms = NULL, lease_deadline_ms = NULL, "
                       "duplicate_of = NULL "
                       "WHERE sweep_id = ?1 AND state IN ('failed', 'cancelled')",
                       sweep_id));
  for (const auto& [trial_id, state] : requeued) effects.Move(state, v1::TRIAL_QUEUED);
  if (!requeued.empty()) effects.work_queued = true;
  RETURN_IF_ERROR(Exec("UPDATE sweeps SET state = 'running', error = '', finished_ms = NULL "
                       "WHERE id = ?1",
                       sweep_id));
  effects.touched_sweeps.insert(sweep_id);
  // Nothing to run again (the planner itself had failed): it plans from the results it has.
  RETURN_IF_ERROR(AdvanceSweep(sweep_id, /*at_submit=*/false, now_ms, effects));
  RETURN_IF_ERROR(Commit(txn, effects));
  return BuildSweep(sweep_id);
}

}  // namespace bitsweep::server::coordinator_internal
