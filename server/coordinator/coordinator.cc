// Coordinator::Open and the SqliteCoordinator's setup: the database opened and migrated, metrics
// started from what it holds, live sweeps advanced, and the per-sweep and per-strategy caches.
// The class (sqlite_coordinator.h) is split by responsibility: group_commit.cc, model_api.cc,
// sweep_lifecycle.cc, read_api.cc, trial_outcomes.cc, leases.cc; request_checks.h holds the
// checks that need no database.
#include "server/coordinator/coordinator.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "server/coordinator/sqlite_coordinator.h"
#include "server/frontier/frontier.h"

namespace bitsweep::server {
namespace coordinator_internal {

absl::Status SqliteCoordinator::Init() {
  ASSIGN_OR_RETURN(model_files_,
                   ModelFiles::Open(options_.model_dir.empty() ? options_.db_path + "-models"
                                                               : options_.model_dir,
                                    options_.max_model_bytes));
  absl::MutexLock lock(&mu_);
  // Metrics start from what the database holds.
  CoordinatorMetrics::TrialCounts counts{};
  {
    ASSIGN_OR_RETURN(Statement count,
                     db_->Prepare("SELECT state, count(*) FROM trials GROUP BY state"));
    RETURN_IF_ERROR(count.ForEachRow([&] {
      counts[StateFromName(count.Text(0))] = count.Int64(1);
    }));
  }
  metrics_.SetTrialCounts(counts);
  // Resume: a sweep whose step finished but was not advanced (impossible with one transaction
  // per call, but cheap to check) moves on now; live leases simply stay live.
  std::vector<int64_t> live_sweeps;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id FROM sweeps WHERE state IN ('queued', 'running') "
                                  "ORDER BY id"));
    RETURN_IF_ERROR(select.ForEachRow([&] {
      live_sweeps.push_back(select.Int64(0));
    }));
  }
  if (!live_sweeps.empty()) {
    Effects effects;
    ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
    for (int64_t sweep_id : live_sweeps) {
      RETURN_IF_ERROR(AdvanceSweep(sweep_id, /*at_submit=*/false, NowMs(), effects));
    }
    RETURN_IF_ERROR(Commit(txn, effects));
  }
  return RefreshWorkersConnected(/*force=*/true);
}

absl::StatusOr<SweepInfo*> SqliteCoordinator::GetSweepInfo(int64_t sweep_id) {
  auto it = sweeps_.find(sweep_id);
  if (it != sweeps_.end()) return it->second.get();
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT spec_proto, max_attempts, error_margin FROM sweeps "
                                "WHERE id = ?1"));
  select.Bind(1, sweep_id);
  ASSIGN_OR_RETURN(bool row, select.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  auto info = std::make_unique<SweepInfo>();
  info->id = sweep_id;
  if (!info->spec.ParseFromString(select.BlobColumn(0))) {
    return absl::InternalError(absl::StrCat("sweep ", sweep_id, ": stored spec is corrupt"));
  }
  info->max_attempts = static_cast<int>(select.Int64(1));
  info->error_margin = select.Double(2);
  absl::StatusOr<std::vector<v1::Objective>> objectives = SweepObjectives(info->spec);
  info->objectives = objectives.ok() ? *objectives : DefaultSweepObjectives();
  SweepInfo* raw = info.get();
  sweeps_.emplace(sweep_id, std::move(info));
  return raw;
}

absl::StatusOr<const Strategy*> SqliteCoordinator::StrategyFor(absl::string_view name) {
  auto it = strategies_.find(name);
  if (it != strategies_.end()) return it->second.get();
  auto factory = options_.strategy_factory ? options_.strategy_factory : MakeStrategy;
  ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, factory(name));
  if (strategy == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown strategy '", name, "'"));
  }
  const Strategy* raw = strategy.get();
  strategies_.emplace(std::string(name), std::move(strategy));
  return raw;
}

}  // namespace coordinator_internal

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Open(
    const CoordinatorOptions& options) {
  if (options.clock == nullptr) {
    return absl::InvalidArgumentError("CoordinatorOptions.clock: required");
  }
  if (options.db_path.empty()) {
    return absl::InvalidArgumentError("CoordinatorOptions.db_path: required");
  }
  if (options.lease_duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("CoordinatorOptions.lease_duration: must be positive");
  }
  absl::StatusOr<std::unique_ptr<store::Database>> db = store::Database::Open(options.db_path);
  if (!db.ok()) return Annotate(db.status(), absl::StrCat("database '", options.db_path, "'"));
  auto coordinator = std::make_unique<coordinator_internal::SqliteCoordinator>(options, std::move(*db));
  RETURN_IF_ERROR(coordinator->Init());
  coordinator->StartExpiryTimer();
  return coordinator;
}

}  // namespace bitsweep::server
