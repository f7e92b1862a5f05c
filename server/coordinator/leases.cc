// The worker side of the coordinator (WorkerService): registration, leases and their expiry,
// heartbeats, reports, returned leases and invalidation. Worker calls run in the group commit
// (group_commit.cc); the results they carry are stored by trial_outcomes.cc.
#include "server/coordinator/sqlite_coordinator.h"

#include <openssl/rand.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/coordinator/request_checks.h"

namespace bitsweep::server::coordinator_internal {

namespace {

// Leases lost to dead or hung workers before a trial fails: more than reported errors, since a
// lost lease says little about the trial (see LostLeaseCap).
constexpr int64_t kMinLostLeaseCap = 10;
int64_t LostLeaseCap(int max_attempts) {
  return std::max<int64_t>(kMinLostLeaseCap, 3 * static_cast<int64_t>(max_attempts));
}
constexpr int kMaxLeaseBatch = 64;

std::string RandomHex(int bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    // OpenSSL's CSPRNG failing is near impossible; time-derived bytes still keep ids distinct
    // enough for leases (they are also prefixed with the trial id and attempt).
    int64_t now = absl::GetCurrentTimeNanos();
    for (int i = 0; i < bytes; ++i) raw[i] = static_cast<char>(now >> (8 * (i % 8)));
  }
  return absl::BytesToHexString(raw);
}

}  // namespace

std::string SqliteCoordinator::LeaseSuffix() {
  if (!lease_rng_.has_value()) lease_rng_.emplace(std::stoull(RandomHex(8), nullptr, 16));
  return absl::StrCat(absl::Hex(lease_rng_->Next() >> 16, absl::kZeroPad12));
}

absl::Status SqliteCoordinator::TouchWorker(absl::string_view worker_id, int64_t now_ms,
                                            Effects& effects) {
  // Lease and Report arrive thousands of times a second: last_seen is written at most once a
  // second per worker (plenty for "seen within three heartbeat intervals"), which keeps the
  // workers page out of most commits.
  auto known = worker_seen_written_ms_.find(worker_id);
  if (known != worker_seen_written_ms_.end() && now_ms - known->second < 1000 &&
      now_ms >= known->second) {
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(
      Exec("UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1", worker_id, now_ms));
  if (db_->Changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat("unknown worker '", worker_id, "': register again"));
  }
  effects.workers_seen.emplace_back(std::string(worker_id), now_ms);  // cached once committed
  return absl::OkStatus();
}

absl::StatusOr<v1::RegisterResponse> SqliteCoordinator::RegisterWorker(
    const v1::RegisterRequest& r) {
  if (r.threads() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("threads: must be >= 0, got ", r.threads()));
  }
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = NowMs();
  const std::string worker_id = absl::StrCat("w-", RandomHex(8));
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  RETURN_IF_ERROR(Exec("INSERT INTO workers(id, name, threads, engine_version, registered_ms, "
                       "last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                       worker_id, r.name(), static_cast<int64_t>(r.threads()),
                       r.engine_version(), now_ms));
  RETURN_IF_ERROR(txn.Commit());
  worker_seen_written_ms_[worker_id] = now_ms;
  RETURN_IF_ERROR(RefreshWorkersConnected(/*force=*/true));
  v1::RegisterResponse response;
  response.set_worker_id(worker_id);
  response.set_lease_duration_ms(absl::ToInt64Milliseconds(options_.lease_duration));
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  return response;
}

absl::Status SqliteCoordinator::ExpireLeasesLocked(int64_t now_ms, Effects& effects) {
  struct Expired {
    int64_t id, sweep_id, lost;
    std::string error, lease_id;
  };
  std::vector<Expired> expired;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, sweep_id, lost_leases + 1, error, lease_id "
                                  "FROM trials WHERE state = 'running' "
                                  "AND lease_deadline_ms < ?1"));
    select.Bind(1, now_ms);
    RETURN_IF_ERROR(select.ForEachRow([&] {
      expired.push_back({select.Int64(0), select.Int64(1), select.Int64(2), select.Text(3),
                         select.Text(4)});
    }));
  }
  // Sorted here, not by ORDER BY id: that makes SQLite walk the whole table in rowid order
  // instead of the small partial index of running trials, on every Lease and Heartbeat.
  std::sort(expired.begin(), expired.end(),
            [](const Expired& a, const Expired& b) { return a.id < b.id; });
  for (const Expired& trial : expired) {
    effects.lease_expiries += 1;
    RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'expired', ended_ms = ?2 "
                         "WHERE id = ?1 AND outcome IS NULL",
                         trial.lease_id, now_ms));
    RETURN_IF_ERROR(Exec("UPDATE trials SET lost_leases = ?2 WHERE id = ?1", trial.id,
                         trial.lost));
    ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(trial.sweep_id));
    if (trial.lost >= LostLeaseCap(sweep->max_attempts)) {
      const std::string error =
          trial.error.empty() ? absl::StrCat("lease expired ", trial.lost, " times")
                              : trial.error;
      RETURN_IF_ERROR(
          FailTrial(trial.id, trial.sweep_id, v1::TRIAL_RUNNING, error, now_ms, effects));
    } else {
      RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', lease_deadline_ms = NULL "
                           "WHERE id = ?1",
                           trial.id));
      effects.Move(v1::TRIAL_RUNNING, v1::TRIAL_QUEUED);
      effects.retries.push_back("lease_expired");
      effects.work_queued = true;
      effects.touched_sweeps.insert(trial.sweep_id);
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  RETURN_IF_ERROR(ExpireLeasesLocked(NowMs(), effects));
  RETURN_IF_ERROR(Commit(txn, effects));
  // Workers that stopped calling are noticed here too, not only on the next worker call.
  return RefreshWorkersConnected(/*force=*/true);
}

absl::Status SqliteCoordinator::LeaseLocked(const v1::LeaseRequest& r, int64_t now_ms,
                                            v1::LeaseResponse& out, Effects& effects) {
  RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
  RETURN_IF_ERROR(ExpireLeasesLocked(now_ms, effects));
  const int64_t limit = std::clamp(r.max_trials() == 0 ? 1 : r.max_trials(), 1, kMaxLeaseBatch);
  struct Queued {
    int64_t id, sweep_id, attempts;
    std::string spec_bytes, config_hash;
  };
  std::vector<Queued> queued;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, sweep_id, attempts, spec_proto, config_hash "
                                  "FROM trials WHERE state = 'queued' AND duplicate_of IS NULL "
                                  "ORDER BY sweep_id, id LIMIT ?1"));
    select.Bind(1, limit);
    RETURN_IF_ERROR(select.ForEachRow([&] {
      queued.push_back({select.Int64(0), select.Int64(1), select.Int64(2),
                        select.BlobColumn(3), select.Text(4)});
    }));
  }
  const int64_t deadline_ms = now_ms + absl::ToInt64Milliseconds(options_.lease_duration);
  for (const Queued& trial : queued) {
    const int64_t attempt = trial.attempts + 1;
    const std::string lease_id = absl::StrCat(trial.id, "-", attempt, "-", LeaseSuffix());
    RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'running', attempts = ?2, lease_id = ?3, "
                         "worker_id = ?4, lease_deadline_ms = ?5, "
                         "started_ms = coalesce(started_ms, ?6) WHERE id = ?1",
                         trial.id, attempt, lease_id, r.worker_id(), deadline_ms, now_ms));
    RETURN_IF_ERROR(Exec("INSERT INTO leases(id, trial_id, worker_id, attempt, leased_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
                         lease_id, trial.id, r.worker_id(), attempt, now_ms));
    ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(trial.sweep_id));
    if (!sweep->known_running) {
      RETURN_IF_ERROR(Exec(
          "UPDATE sweeps SET state = 'running' WHERE id = ?1 AND state = 'queued'",
          trial.sweep_id));
      effects.sweeps_started.push_back(trial.sweep_id);
    }
    effects.Move(v1::TRIAL_QUEUED, v1::TRIAL_RUNNING);
    effects.touched_sweeps.insert(trial.sweep_id);
    effects.attempts += 1;
    v1::LeasedTrial& leased = *out.add_trials();
    leased.set_trial_id(trial.id);
    leased.set_lease_id(lease_id);
    leased.set_deadline_ms(deadline_ms);
    leased.set_attempt(static_cast<int32_t>(attempt));
    leased.set_model_hash(sweep->spec.model_hash());
    *leased.mutable_settings() = sweep->spec.settings();
    if (!leased.mutable_spec()->ParseFromString(trial.spec_bytes)) {
      return absl::InternalError(absl::StrCat("trial ", trial.id, ": stored spec is corrupt"));
    }
    leased.set_config_hash(trial.config_hash);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::LeaseResponse> SqliteCoordinator::Lease(const v1::LeaseRequest& r) {
  if (r.max_trials() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_trials: must be >= 0, got ", r.max_trials()));
  }
  // A long poll lasts at most one heartbeat interval: an idle worker then calls again, is seen,
  // and stays counted in bitsweep_workers_connected (three intervals).
  const absl::Time wait_until =
      absl::Now() + std::min(absl::Milliseconds(std::max<int64_t>(0, r.wait_ms())),
                             options_.heartbeat_interval);
  for (;;) {
    v1::LeaseResponse response;
    int64_t generation = 0;
    GroupOp op;
    op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      response.Clear();
      generation = work_generation_;
      return LeaseLocked(r, NowMs(), response, effects);
    };
    RETURN_IF_ERROR(RunGrouped(op));
    if (response.trials_size() > 0) return response;
    if (wait_until - absl::Now() <= absl::ZeroDuration()) return response;
    // Woken when trials were queued since the attempt; the loop re-checks (another worker may
    // have taken them). The long poll itself is outside any transaction.
    absl::MutexLock lock(&mu_);
    while (work_generation_ == generation) {
      const absl::Duration remaining = wait_until - absl::Now();
      if (remaining <= absl::ZeroDuration()) break;
      work_available_.WaitWithTimeout(&mu_, remaining);
    }
  }
}

absl::StatusOr<v1::HeartbeatResponse> SqliteCoordinator::Heartbeat(
    const v1::HeartbeatRequest& r) {
  v1::HeartbeatResponse response;
  GroupOp op;
  op.force_workers_refresh = true;
  op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    response.Clear();
    return HeartbeatLocked(r, NowMs(), response, effects);
  };
  RETURN_IF_ERROR(RunGrouped(op));
  return response;
}

absl::Status SqliteCoordinator::HeartbeatLocked(const v1::HeartbeatRequest& r, int64_t now_ms,
                                                v1::HeartbeatResponse& response,
                                                Effects& effects) {
  const int64_t deadline_ms = now_ms + absl::ToInt64Milliseconds(options_.lease_duration);
  response.set_deadline_ms(deadline_ms);
  RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
  // Leases that ran out before this heartbeat are gone: the worker hears so below.
  RETURN_IF_ERROR(ExpireLeasesLocked(now_ms, effects));
  for (const std::string& lease_id : r.lease_ids()) {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT trial_id, worker_id, outcome FROM leases "
                                  "WHERE id = ?1"));
    select.Bind(1, lease_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row || select.Text(1) != r.worker_id()) {
      response.add_lost_lease_ids(lease_id);
      continue;
    }
    const int64_t trial_id = select.Int64(0);
    const bool live = select.IsNull(2);
    const std::string outcome = select.Text(2);
    if (live) {
      RETURN_IF_ERROR(Exec("UPDATE trials SET lease_deadline_ms = ?3 WHERE id = ?1 "
                           "AND lease_id = ?2 AND state = 'running'",
                           trial_id, lease_id, deadline_ms));
      if (db_->Changes() == 0) response.add_lost_lease_ids(lease_id);
    } else if (outcome == "cancelled") {
      response.add_cancelled_lease_ids(lease_id);
    } else {
      response.add_lost_lease_ids(lease_id);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> SqliteCoordinator::ReportLocked(const v1::ReportRequest& r, int64_t now_ms,
                                                     Effects& effects) {
  RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
  // The lease decides idempotency: its first report's answer is every later report's answer.
  int64_t lease_trial_id = 0;
  int64_t leased_ms = 0;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT trial_id, report_accepted, leased_ms, worker_id, "
                                  "outcome FROM leases WHERE id = ?1"));
    select.Bind(1, r.lease_id());
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (row) {
      // Only the worker the lease was handed to may report on it (and settle its answer).
      if (select.Text(3) != r.worker_id()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "lease ", r.lease_id(), " belongs to another worker, not ", r.worker_id()));
      }
      lease_trial_id = select.Int64(0);
      if (lease_trial_id == r.trial_id() && !select.IsNull(1)) return select.Int64(1) != 0;
      if (lease_trial_id == r.trial_id() && !select.IsNull(4) && select.Text(4) == "returned") {
        // The worker gave this lease back: whatever it reports later is not its trial's.
        RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 0 WHERE id = ?1", r.lease_id()));
        effects.reports.push_back("refused");
        return false;
      }
      leased_ms = select.Int64(2);
    }
  }
  if (lease_trial_id != r.trial_id()) {
    ASSIGN_OR_RETURN(std::optional<int64_t> exists,
                     QueryInt("SELECT 1 FROM trials WHERE id = ?1", r.trial_id()));
    if (!exists.has_value()) {
      return absl::NotFoundError(absl::StrCat("trial ", r.trial_id(), " not found"));
    }
    effects.reports.push_back("refused");
    return false;  // a lease this trial never had: nothing to store
  }

  int64_t sweep_id = 0, attempts = 0;
  int state = 0;
  std::string current_lease, stage, dedup_key;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT sweep_id, state, attempts - lost_leases, lease_id, "
                                  "stage, dedup_key FROM trials WHERE id = ?1"));
    select.Bind(1, r.trial_id());
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("trial ", r.trial_id(), " not found"));
    sweep_id = select.Int64(0);
    state = StateFromName(select.Text(1));
    attempts = select.Int64(2);
    current_lease = select.Text(3);
    stage = select.Text(4);
    dedup_key = select.Text(5);
  }
  if (state != v1::TRIAL_QUEUED && state != v1::TRIAL_RUNNING) {
    RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 0 WHERE id = ?1", r.lease_id()));
    effects.reports.push_back("refused");
    return false;  // finished (another attempt reported first, or it was cancelled)
  }
  ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(sweep_id));
  const bool is_current_lease = state == v1::TRIAL_RUNNING && current_lease == r.lease_id();
  // Ends this lease with `outcome` (if still live) and, when another lease of the trial is
  // live, that one as superseded (its worker hears "lost" at its next heartbeat).
  auto end_leases = [&](absl::string_view outcome, bool trial_finished) -> absl::Status {
    RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 1, "
                         "outcome = coalesce(outcome, ?2), ended_ms = coalesce(ended_ms, ?3) "
                         "WHERE id = ?1",
                         r.lease_id(), outcome, now_ms));
    if (trial_finished && state == v1::TRIAL_RUNNING && !is_current_lease) {
      RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'superseded', ended_ms = ?2 "
                           "WHERE id = ?1 AND outcome IS NULL",
                           current_lease, now_ms));
    }
    return absl::OkStatus();
  };
  effects.touched_sweeps.insert(sweep_id);

  if (r.has_result()) {
    RETURN_IF_ERROR(CheckLayersOfModel(sweep->spec.model_hash(), r.result()));
    RETURN_IF_ERROR(StoreResult(r.trial_id(), *sweep, dedup_key, r, now_ms));
    RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'succeeded', finished_ms = ?2, "
                         "lease_deadline_ms = NULL WHERE id = ?1",
                         r.trial_id(), now_ms));
    effects.Move(state, v1::TRIAL_SUCCEEDED);
    RETURN_IF_ERROR(end_leases("result", /*trial_finished=*/true));
    effects.trial_durations.push_back((now_ms - leased_ms) / 1000.0);
    effects.reports.push_back("result");
    RETURN_IF_ERROR(
        OnTrialSucceeded(sweep_id, r.trial_id(), stage, r.trial_id(), effects, &r.result()));
    ASSIGN_OR_RETURN(std::set<int64_t> other_sweeps,
                     CompleteDuplicates(r.trial_id(), now_ms, effects));
    other_sweeps.insert(sweep_id);
    for (int64_t id : other_sweeps) {
      RETURN_IF_ERROR(AdvanceSweep(id, /*at_submit=*/false, now_ms, effects));
    }
    return true;
  }
  if (!r.has_error()) {
    return absl::InvalidArgumentError("report: neither result nor error is set");
  }
  const std::string& message = r.error().message().empty() ? std::string("unknown worker error")
                                                           : r.error().message();
  if (r.error().permanent()) {
    RETURN_IF_ERROR(end_leases("error", /*trial_finished=*/true));
    effects.reports.push_back("permanent_error");
    RETURN_IF_ERROR(FailTrial(r.trial_id(), sweep_id, state, message, now_ms, effects));
    return true;
  }
  if (!is_current_lease) {
    // A stale lease's transient failure: its attempt was already counted when it expired and
    // the trial runs (or waits) under another lease; nothing is stored, and the answer says so.
    RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 0, outcome = coalesce(outcome, "
                         "'error'), ended_ms = coalesce(ended_ms, ?2) WHERE id = ?1",
                         r.lease_id(), now_ms));
    effects.reports.push_back("refused");
    return false;
  }
  effects.reports.push_back("error");
  RETURN_IF_ERROR(end_leases("error", /*trial_finished=*/false));
  if (attempts >= sweep->max_attempts) {
    RETURN_IF_ERROR(FailTrial(r.trial_id(), sweep_id, state, message, now_ms, effects));
    return true;
  }
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', error = ?2, "
                       "lease_deadline_ms = NULL WHERE id = ?1",
                       r.trial_id(), message));
  effects.Move(state, v1::TRIAL_QUEUED);
  effects.retries.push_back("error");
  effects.work_queued = true;
  return true;
}

absl::StatusOr<v1::InvalidateTrialResponse> SqliteCoordinator::InvalidateTrial(
    int64_t trial_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(std::optional<int64_t> evaluated,
                   QueryInt("SELECT coalesce(cached_from, id) FROM trials WHERE id = ?1",
                            trial_id));
  if (!evaluated.has_value()) {
    return absl::NotFoundError(absl::StrCat("trial ", trial_id, " not found"));
  }
  ASSIGN_OR_RETURN(std::optional<int64_t> already,
                   QueryInt("SELECT invalidated_ms IS NOT NULL FROM results WHERE trial_id = ?1",
                            *evaluated));
  if (!already.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("trial ", trial_id, " has no result to invalidate"));
  }
  v1::InvalidateTrialResponse response;
  response.set_evaluated_trial_id(*evaluated);
  response.set_invalidated(*already == 0);
  if (*already == 0) {
    RETURN_IF_ERROR(Exec("UPDATE results SET invalidated_ms = ?2 WHERE trial_id = ?1",
                         *evaluated, NowMs()));
  }
  RETURN_IF_ERROR(txn.Commit());
  return response;
}

absl::StatusOr<v1::ReturnLeasesResponse> SqliteCoordinator::ReturnLeases(
    const v1::ReturnLeasesRequest& r) {
  v1::ReturnLeasesResponse response;
  GroupOp op;
  op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    response.Clear();
    const int64_t now_ms = NowMs();
    RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
    for (const std::string& lease_id : r.lease_ids()) {
      // Only a live lease of this worker that is still its trial's current one.
      ASSIGN_OR_RETURN(Statement select,
                       db_->Prepare("SELECT t.id, t.sweep_id FROM leases l JOIN trials t "
                                    "ON t.id = l.trial_id AND t.lease_id = l.id "
                                    "WHERE l.id = ?1 AND l.worker_id = ?2 AND l.outcome IS NULL "
                                    "AND t.state = 'running'"));
      select.BindAll(lease_id, r.worker_id());
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) continue;
      const int64_t trial_id = select.Int64(0), sweep_id = select.Int64(1);
      RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'returned', ended_ms = ?2 WHERE id = ?1",
                           lease_id, now_ms));
      RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', lease_deadline_ms = NULL, "
                           "attempts = attempts - 1 WHERE id = ?1",
                           trial_id));
      effects.Move(v1::TRIAL_RUNNING, v1::TRIAL_QUEUED);
      effects.work_queued = true;
      effects.touched_sweeps.insert(sweep_id);
      response.add_returned_lease_ids(lease_id);
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RunGrouped(op));
  return response;
}

absl::StatusOr<v1::ReportResponse> SqliteCoordinator::Report(const v1::ReportRequest& r) {
  if (r.lease_next() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease_next: must be >= 0, got ", r.lease_next()));
  }
  if (r.has_result()) {
    if (absl::Status checked = CheckResult(r.result()); !checked.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(checked.message(), " (trial ", r.trial_id(), ")"));
    }
  }
  v1::ReportResponse response;
  GroupOp op;
  op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    response.Clear();
    const int64_t now_ms = NowMs();
    ASSIGN_OR_RETURN(bool accepted, ReportLocked(r, now_ms, effects));
    response.set_accepted(accepted);
    if (r.lease_next() == 0) return absl::OkStatus();
    // The worker's next trials, in the same transaction: one call and one commit per trial.
    v1::LeaseRequest lease;
    lease.set_worker_id(r.worker_id());
    lease.set_max_trials(r.lease_next());
    v1::LeaseResponse leased;
    RETURN_IF_ERROR(LeaseLocked(lease, now_ms, leased, effects));
    response.mutable_next()->Swap(leased.mutable_trials());
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RunGrouped(op));
  return response;
}

}  // namespace bitsweep::server::coordinator_internal
