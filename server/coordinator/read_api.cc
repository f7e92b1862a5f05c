// The read side of the ExplorerService: sweeps (with their trial counts), pages of sweeps and
// trials, frontiers, config exports and the long poll on a sweep's version. Reads take one
// statement or a read transaction; they never change the database.
#include "server/coordinator/sqlite_coordinator.h"

#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/coordinator/manifest.h"
#include "server/coordinator/request_checks.h"
#include "server/export/qdq.h"
#include "server/frontier/frontier.h"

namespace bitsweep::server::coordinator_internal {

namespace {

constexpr int kDefaultSweepPageSize = 50;
constexpr int kDefaultTrialPageSize = 100;
// A page also ends once its entries reach this many bytes (the next entry goes to the next page),
// so that a list of large sweeps (1 MiB hardware profiles) stays far below the 64 MiB message
// limit.
constexpr size_t kMaxPageBytes = 8 << 20;

// Columns of a trial row as the API returns it (see ReadTrial).
constexpr absl::string_view kTrialSelect =
    "SELECT t.id, t.sweep_id, t.spec_proto, t.config_hash, t.state, t.attempts, t.error, "
    "t.cached, t.cached_from, t.created_ms, t.finished_ms, r.result_proto, s.baseline_top1, "
    "s.error_margin, t.config_json "
    "FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
    "LEFT JOIN results r ON r.trial_id = coalesce(t.cached_from, t.id) "
    "AND t.state = 'succeeded' ";

absl::StatusOr<v1::Trial> ReadTrial(const Statement& row) {
  v1::Trial trial;
  trial.set_id(row.Int64(0));
  trial.set_sweep_id(row.Int64(1));
  if (!trial.mutable_spec()->ParseFromString(row.BlobColumn(2))) {
    return absl::InternalError(absl::StrCat("trial ", trial.id(), ": stored spec is corrupt"));
  }
  trial.set_config_hash(row.Text(3));
  trial.set_state(static_cast<v1::TrialState>(StateFromName(row.Text(4))));
  trial.set_attempts(static_cast<int32_t>(row.Int64(5)));
  trial.set_error(row.Text(6));
  trial.set_cached(row.Int64(7) != 0);
  trial.set_cached_from(row.IsNull(8) ? 0 : row.Int64(8));
  trial.set_created_ms(row.Int64(9));
  trial.set_finished_ms(row.IsNull(10) ? 0 : row.Int64(10));
  if (!row.IsNull(11)) {
    if (!trial.mutable_result()->ParseFromString(row.BlobColumn(11))) {
      return absl::InternalError(
          absl::StrCat("trial ", trial.id(), ": stored result is corrupt"));
    }
    std::optional<double> baseline = row.OptionalDouble(12);
    trial.set_within_margin(baseline.has_value() &&
                            WithinMargin(trial.result().top1(), *baseline, row.Double(13)));
  }
  return trial;
}

}  // namespace

absl::StatusOr<v1::Sweep> SqliteCoordinator::BuildSweep(int64_t sweep_id) {
  v1::Sweep sweep;
  std::optional<int64_t> best_trial_id;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT spec_proto, state, stage, error, baseline_top1, "
                                  "best_trial_id, created_ms, updated_ms, finished_ms "
                                  "FROM sweeps WHERE id = ?1"));
    select.Bind(1, sweep_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
    sweep.set_id(sweep_id);
    if (!sweep.mutable_spec()->ParseFromString(select.BlobColumn(0))) {
      return absl::InternalError(absl::StrCat("sweep ", sweep_id, ": stored spec is corrupt"));
    }
    sweep.set_state(static_cast<v1::SweepState>(StateFromName(select.Text(1))));
    sweep.set_stage(select.Text(2));
    sweep.set_error(select.Text(3));
    if (!select.IsNull(4)) sweep.set_baseline_top1(select.Double(4));
    best_trial_id = select.OptionalInt64(5);
    sweep.set_created_ms(select.Int64(6));
    sweep.set_updated_ms(select.Int64(7));
    sweep.set_finished_ms(select.IsNull(8) ? 0 : select.Int64(8));
  }
  {
    ASSIGN_OR_RETURN(Statement count,
                     db_->Prepare("SELECT state, cached, count(*) FROM trials "
                                  "WHERE sweep_id = ?1 GROUP BY state, cached"));
    count.Bind(1, sweep_id);
    RETURN_IF_ERROR(count.ForEachRow([&] {
      const int64_t n = count.Int64(2);
      sweep.set_trials_total(sweep.trials_total() + n);
      switch (StateFromName(count.Text(0))) {
        case v1::TRIAL_QUEUED: sweep.set_trials_queued(sweep.trials_queued() + n); break;
        case v1::TRIAL_RUNNING: sweep.set_trials_running(sweep.trials_running() + n); break;
        case v1::TRIAL_SUCCEEDED:
          sweep.set_trials_succeeded(sweep.trials_succeeded() + n);
          if (count.Int64(1) != 0) sweep.set_trials_cached(sweep.trials_cached() + n);
          break;
        case v1::TRIAL_FAILED: sweep.set_trials_failed(sweep.trials_failed() + n); break;
        case v1::TRIAL_CANCELLED: sweep.set_trials_cancelled(sweep.trials_cancelled() + n); break;
        default: break;
      }
    }));
  }
  {
    ASSIGN_OR_RETURN(Statement stages,
                     db_->Prepare("SELECT stage FROM sweep_stages WHERE sweep_id = ?1 "
                                  "AND finished_ms IS NOT NULL ORDER BY step"));
    stages.Bind(1, sweep_id);
    RETURN_IF_ERROR(stages.ForEachRow([&] {
      sweep.add_finished_stages(stages.Text(0));
    }));
  }
  if (best_trial_id.has_value()) {
    ASSIGN_OR_RETURN(Statement best,
                     db_->Prepare("SELECT r.top1, r.size_bits FROM trials t JOIN results r "
                                  "ON r.trial_id = coalesce(t.cached_from, t.id) WHERE t.id = ?1"));
    best.Bind(1, *best_trial_id);
    ASSIGN_OR_RETURN(bool row, best.Step());
    if (row) {
      sweep.set_best_trial_id(*best_trial_id);
      sweep.set_best_top1(best.Double(0));
      sweep.set_best_size_bits(best.Int64(1));
    }
  }
  return sweep;
}

absl::StatusOr<v1::Sweep> SqliteCoordinator::GetSweep(int64_t sweep_id) {
  absl::MutexLock lock(&mu_);
  return BuildSweep(sweep_id);
}

absl::StatusOr<v1::ListSweepsResponse> SqliteCoordinator::ListSweeps(
    const v1::ListSweepsRequest& r) {
  ASSIGN_OR_RETURN(int page_size, ResolvePageSize(r.page_size(), kDefaultSweepPageSize));
  ASSIGN_OR_RETURN(int64_t after, ParsePageToken(r.page_token()));
  const int64_t before_id = after == 0 ? std::numeric_limits<int64_t>::max() : after;
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> ids;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id FROM sweeps WHERE id < ?1 ORDER BY id DESC "
                                  "LIMIT ?2"));
    select.BindAll(before_id, static_cast<int64_t>(page_size) + 1);
    RETURN_IF_ERROR(select.ForEachRow([&] {
      ids.push_back(select.Int64(0));
    }));
  }
  v1::ListSweepsResponse response;
  size_t page_bytes = 0;
  for (int i = 0; i < static_cast<int>(ids.size()) && i < page_size; ++i) {
    v1::Sweep* sweep = response.add_sweeps();
    ASSIGN_OR_RETURN(*sweep, BuildSweep(ids[i]));
    page_bytes += sweep->ByteSizeLong();
    if (page_bytes >= kMaxPageBytes && i + 1 < static_cast<int>(ids.size())) {
      response.set_next_page_token(absl::StrCat(ids[i]));
      return response;
    }
  }
  if (static_cast<int>(ids.size()) > page_size) {
    response.set_next_page_token(absl::StrCat(ids[page_size - 1]));
  }
  return response;
}

absl::StatusOr<v1::ListTrialsResponse> SqliteCoordinator::ListTrials(
    const v1::ListTrialsRequest& r) {
  if (r.sweep_id() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep_id: required, got ", r.sweep_id()));
  }
  ASSIGN_OR_RETURN(int page_size, ResolvePageSize(r.page_size(), kDefaultTrialPageSize));
  ASSIGN_OR_RETURN(int64_t after_id, ParsePageToken(r.page_token()));
  if (r.state() != v1::TRIAL_STATE_UNSPECIFIED && StateName(r.state())[0] == '\0') {
    return absl::InvalidArgumentError(absl::StrCat("state: unknown value ", r.state()));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::optional<int64_t> exists,
                   QueryInt("SELECT 1 FROM sweeps WHERE id = ?1", r.sweep_id()));
  if (!exists.has_value()) {
    return absl::NotFoundError(absl::StrCat("sweep ", r.sweep_id(), " not found"));
  }
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare(absl::StrCat(
          kTrialSelect,
          "WHERE t.sweep_id = ?1 AND t.id > ?2 AND (?3 = '' OR t.state = ?3) "
          "AND (?4 = '' OR t.stage = ?4) "
          "AND (?5 = 0 OR (t.state = 'succeeded' AND s.baseline_top1 IS NOT NULL "
          "AND r.top1 >= s.baseline_top1 - s.error_margin / 100.0 - 1e-9)) "
          "ORDER BY t.id LIMIT ?6")));
  select.BindAll(r.sweep_id(), after_id,
                 r.state() == v1::TRIAL_STATE_UNSPECIFIED ? "" : StateName(r.state()), r.stage(),
                 r.within_margin_only(), static_cast<int64_t>(page_size) + 1);
  v1::ListTrialsResponse response;
  int64_t last_id = 0;
  size_t page_bytes = 0;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    if (response.trials_size() == page_size || page_bytes >= kMaxPageBytes) {
      response.set_next_page_token(absl::StrCat(last_id));
      break;
    }
    v1::Trial* trial = response.add_trials();
    ASSIGN_OR_RETURN(*trial, ReadTrial(select));
    page_bytes += trial->ByteSizeLong();
    last_id = trial->id();
  }
  return response;
}

absl::StatusOr<v1::Frontier> SqliteCoordinator::GetFrontier(const v1::GetFrontierRequest& r) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(r.sweep_id()));
  absl::StatusOr<std::vector<v1::Objective>> objectives =
      ResolveObjectives(ToObjectives(r.objectives()), sweep->objectives);
  if (!objectives.ok()) return Annotate(objectives.status(), "objectives");
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT baseline_top1 FROM sweeps WHERE id = ?1"));
  select.Bind(1, r.sweep_id());
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("sweep ", r.sweep_id(), " not found"));
  const std::optional<double> baseline = select.OptionalDouble(0);

  // The numbers of every succeeded trial (no protos: a sweep may hold 100,000 of them), then
  // full specs and results only for the points on the frontier.
  std::vector<v1::Trial> candidates;
  {
    ASSIGN_OR_RETURN(Statement numbers,
                     db_->Prepare("SELECT t.id, r.top1, r.top5, r.size_bits, r.energy_pj, "
                                  "r.bops FROM trials t "
                                  "JOIN results r ON r.trial_id = coalesce(t.cached_from, t.id) "
                                  "WHERE t.sweep_id = ?1 AND t.state = 'succeeded' "
                                  "ORDER BY t.id"));
    numbers.Bind(1, r.sweep_id());
    RETURN_IF_ERROR(numbers.ForEachRow([&] {
      v1::Trial& trial = candidates.emplace_back();
      trial.set_id(numbers.Int64(0));
      trial.set_sweep_id(r.sweep_id());
      trial.set_state(v1::TRIAL_SUCCEEDED);
      trial.mutable_result()->set_top1(numbers.Double(1));
      trial.mutable_result()->set_top5(numbers.Double(2));
      trial.mutable_result()->set_size_bits(numbers.Int64(3));
      trial.mutable_result()->set_energy_pj(numbers.Double(4));
      trial.mutable_result()->set_bops(numbers.Int64(5));
    }));
  }
  v1::Frontier frontier = BuildFrontier(r.sweep_id(), candidates, *objectives, baseline,
                                        sweep->error_margin, r.within_margin_only());
  ASSIGN_OR_RETURN(Statement detail,
                   db_->Prepare(absl::StrCat(kTrialSelect, "WHERE t.id = ?1")));
  for (v1::FrontierPoint& point : *frontier.mutable_points()) {
    detail.Reset();
    detail.Bind(1, point.trial_id());
    ASSIGN_OR_RETURN(bool row, detail.Step());
    if (!row) continue;
    ASSIGN_OR_RETURN(v1::Trial trial, ReadTrial(detail));
    *point.mutable_spec() = trial.spec();
    *point.mutable_result() = trial.result();
  }
  return frontier;
}

absl::StatusOr<v1::ExportConfigResponse> SqliteCoordinator::ExportConfig(
    const v1::ExportConfigRequest& r) {
  v1::ExportConfigResponse response;
  v1::Trial trial;
  std::string model_hash;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare(absl::StrCat(kTrialSelect, "WHERE t.id = ?1")));
    select.Bind(1, r.trial_id());
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("trial ", r.trial_id(), " not found"));
    ASSIGN_OR_RETURN(trial, ReadTrial(select));
    const std::string canonical_config = select.Text(14);
    if (trial.state() != v1::TRIAL_SUCCEEDED) {
      return absl::FailedPreconditionError(
          absl::StrCat("trial ", trial.id(), " has no result to export (it is ",
                       StateName(trial.state()), ")"));
    }
    ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(trial.sweep_id()));
    model_hash = sweep->spec.model_hash();
    response.set_manifest_json(BuildConfigManifest(trial, model_hash, canonical_config));
  }
  if (r.qdq_onnx()) {
    if (trial.spec().finetune().steps() > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "trial ", trial.id(), " was fine-tuned (", trial.spec().finetune().steps(),
          " steps): its tuned weights stayed on the worker and the stored model holds the "
          "untuned ones, so a QDQ model would not be what was measured; export its manifest, "
          "or rebuild the weights with 'bitsweep finetune --model M.onnx --config C.json --dataset D --steps N --out F.onnx'"));
    }
    ASSIGN_OR_RETURN(std::string model, GetModelBytes(model_hash));
    absl::StatusOr<std::string> qdq = BuildQdqModel(model, trial.result());
    if (!qdq.ok()) return Annotate(qdq.status(), absl::StrCat("trial ", trial.id()));
    response.set_qdq_onnx(*std::move(qdq));
  }
  return response;
}

absl::StatusOr<int64_t> SqliteCoordinator::WaitForSweepChange(int64_t sweep_id,
                                                              int64_t seen_version,
                                                              absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  for (;;) {
    ASSIGN_OR_RETURN(std::optional<int64_t> version,
                     QueryInt("SELECT version FROM sweeps WHERE id = ?1", sweep_id));
    if (!version.has_value()) {
      return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
    }
    if (*version != seen_version) return *version;
    const absl::Duration remaining = deadline - absl::Now();
    if (remaining <= absl::ZeroDuration()) return *version;
    sweep_changed_.WaitWithTimeout(&mu_, remaining);
  }
}

}  // namespace bitsweep::server::coordinator_internal
