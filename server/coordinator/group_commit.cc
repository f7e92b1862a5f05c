// How a call's changes become durable: one transaction per explorer call (Commit), and the group
// commit of worker calls in the style of leveldb's DBImpl::Write: callers queue, the first becomes
// the leader and runs every queued call in ONE transaction, each inside its own SAVEPOINT (a call
// that fails rolls back only itself), commits once and only then hands every caller its answer.
// Effects outside the database (metrics, waking waiters, caches) are applied only after commit,
// so a rolled-back call leaves no trace anywhere.
#include "server/coordinator/sqlite_coordinator.h"

#include <malloc.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace bitsweep::server::coordinator_internal {

absl::Status SqliteCoordinator::BumpSweepVersions(const std::set<int64_t>& sweep_ids) {
  const int64_t now_ms = NowMs();
  for (int64_t sweep_id : sweep_ids) {
    RETURN_IF_ERROR(Exec("UPDATE sweeps SET version = version + 1, updated_ms = ?2 WHERE id = ?1",
                         sweep_id, now_ms));
  }
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::Commit(Transaction& txn, Effects& effects) {
  RETURN_IF_ERROR(BumpSweepVersions(effects.touched_sweeps));
  const absl::Time commit_start = absl::Now();
  RETURN_IF_ERROR(txn.Commit());
  metrics_.ObserveCommit(absl::ToDoubleSeconds(absl::Now() - commit_start));
  ApplyEffects(effects);
  return absl::OkStatus();
}

void SqliteCoordinator::ApplyEffects(const Effects& effects) {
  for (const auto& [worker_id, seen_ms] : effects.workers_seen) {
    worker_seen_written_ms_[worker_id] = seen_ms;
  }
  for (int64_t sweep_id : effects.sweeps_started) {
    auto it = sweeps_.find(sweep_id);
    if (it != sweeps_.end()) it->second->known_running = true;
  }
  for (int state = v1::TRIAL_QUEUED; state <= v1::TRIAL_CANCELLED; ++state) {
    metrics_.AddTrials(static_cast<v1::TrialState>(state), effects.trial_delta[state]);
  }
  metrics_.AddLeaseExpiries(effects.lease_expiries);
  for (double seconds : effects.trial_durations) metrics_.ObserveTrialDuration(seconds);
  for (double seconds : effects.stage_durations) metrics_.ObserveStageDuration(seconds);
  for (const std::string& outcome : effects.reports) metrics_.CountReport(outcome);
  metrics_.CountAttempts(effects.attempts);
  for (const std::string& reason : effects.retries) metrics_.CountRetry(reason);
  if (effects.work_queued) {
    ++work_generation_;
    work_available_.SignalAll();
  }
  if (!effects.touched_sweeps.empty()) sweep_changed_.SignalAll();
  // A planner step (and the outcomes it was given) allocated and freed tens of megabytes, often
  // on a gRPC thread with its own malloc arena: give the free pages back so that they do not
  // pile up arena after arena.
  if (effects.planned) malloc_trim(0);
}

absl::Status SqliteCoordinator::RunGrouped(GroupOp& op) {
  group_commit_.Run(op, [this](const std::vector<GroupOp*>& batch) { RunBatch(batch); });
  return op.status;
}

void SqliteCoordinator::RunBatch(const std::vector<GroupOp*>& batch) {
  absl::MutexLock lock(&mu_);
  const absl::Time began = absl::Now();
  for (const GroupOp* op : batch) {
    metrics_.ObserveLockWait(absl::ToDoubleSeconds(began - op->arrived));
  }
  auto fail_all = [&](const absl::Status& status) {
    for (GroupOp* op : batch) op->status = status;
  };
  absl::StatusOr<Transaction> txn = db_->Begin();
  if (!txn.ok()) return fail_all(txn.status());
  // One op needs no savepoint: if it fails, the whole transaction rolls back.
  const bool savepoints = batch.size() > 1;
  std::vector<Effects> effects(batch.size());
  bool any_ok = false;
  bool force_workers_refresh = false;
  for (size_t i = 0; i < batch.size(); ++i) {
    GroupOp& op = *batch[i];
    if (savepoints) {
      absl::Status status = Exec("SAVEPOINT group_op");
      if (!status.ok()) return fail_all(status);
    }
    op.status = op.run(effects[i]);
    if (!savepoints) {
      if (!op.status.ok()) return;  // `txn` rolls back
    } else if (op.status.ok()) {
      absl::Status status = Exec("RELEASE group_op");
      if (!status.ok()) return fail_all(status);
    } else {
      // Undo this op only. If even that fails (SQLite may have rolled back the whole
      // transaction after an I/O error), nothing of the batch is kept.
      absl::Status status = Exec("ROLLBACK TO group_op");
      if (status.ok()) status = Exec("RELEASE group_op");
      if (!status.ok()) {
        const absl::Status op_status = op.status;
        fail_all(status);
        op.status = op_status;
        return;
      }
      effects[i] = Effects();
      continue;
    }
    any_ok = true;
    force_workers_refresh |= op.force_workers_refresh;
  }
  if (!any_ok) return;  // nothing to keep: `txn` rolls back
  // The touched sweeps' versions move once per batch, in the same transaction.
  Effects merged;
  for (const Effects& e : effects) {
    merged.touched_sweeps.insert(e.touched_sweeps.begin(), e.touched_sweeps.end());
  }
  absl::Status status = BumpSweepVersions(merged.touched_sweeps);
  if (!status.ok()) return fail_all(status);
  const absl::Time commit_start = absl::Now();
  status = txn->Commit();
  if (!status.ok()) return fail_all(status);
  metrics_.ObserveCommit(absl::ToDoubleSeconds(absl::Now() - commit_start));
  // Committed: every op's answer stands; now the effects outside the database.
  for (const Effects& e : effects) ApplyEffects(e);
  RefreshWorkersConnected(force_workers_refresh).IgnoreError();  // a gauge: best effort
}

absl::Status SqliteCoordinator::RefreshWorkersConnected(bool force) {
  if (!metrics_.enabled()) return absl::OkStatus();
  const int64_t now_ms = NowMs();
  // Lease calls arrive thousands of times a second; once a second is plenty for a gauge.
  if (!force && now_ms - workers_refreshed_ms_ < 1000) return absl::OkStatus();
  workers_refreshed_ms_ = now_ms;
  const int64_t since_ms = now_ms - 3 * absl::ToInt64Milliseconds(options_.heartbeat_interval);
  ASSIGN_OR_RETURN(std::optional<int64_t> count,
                   QueryInt("SELECT count(*) FROM workers WHERE last_seen_ms >= ?1", since_ms));
  metrics_.SetWorkersConnected(count.value_or(0));
  return absl::OkStatus();
}

}  // namespace bitsweep::server::coordinator_internal
