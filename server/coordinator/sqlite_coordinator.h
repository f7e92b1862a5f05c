// SqliteCoordinator: the Coordinator (coordinator.h) over bitsweep_store. Internal to
// server/coordinator/: Coordinator::Open is the only way in.
//
// One mutex (mu_) guards the connection and every in-memory cache. The hot worker calls (Lease
// attempts, Report, Heartbeat) go through the group commit (group_commit.cc); the other calls
// are one transaction each. Effects outside the database (metrics, waking waiters, caches) are
// collected per call in an Effects while the transaction runs and applied only after it
// commits, so a rolled-back call leaves no trace anywhere.
//
// The member functions live in files named for what they own:
//   coordinator.cc      Open, Init, the sweep and strategy caches
//   group_commit.cc     Commit, the group commit of worker calls, effects after commit
//   model_api.cc        model uploads and reads
//   sweep_lifecycle.cc  submit, advance by the planner, end, cancel, resume
//   read_api.cc         get and list sweeps and trials, frontier, export, the version long poll
//   trial_outcomes.cc   results stored, duplicates completed, failures, baseline and best trial
//   leases.cc           the WorkerService: register, lease, expire, heartbeat, report, return
#ifndef BITSWEEP_SERVER_COORDINATOR_SQLITE_COORDINATOR_H_
#define BITSWEEP_SERVER_COORDINATOR_SQLITE_COORDINATOR_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/splitmix64.h"
#include "common/status_macros.h"
#include "server/coordinator/coordinator.h"
#include "server/coordinator/group_commit_queue.h"
#include "server/coordinator/metrics.h"
#include "server/coordinator/model_store.h"
#include "server/planner/strategy.h"
#include "server/store/store.h"

namespace bitsweep::server::coordinator_internal {

using store::Blob;
using store::Database;
using store::Statement;
using store::Transaction;

// Database spelling of v1::TrialState and v1::SweepState (same numbering).
inline constexpr const char* kStateNames[] = {"", "queued", "running", "succeeded", "failed",
                                       "cancelled"};

inline int StateFromName(absl::string_view name) {
  for (int i = 1; i < 6; ++i) {
    if (name == kStateNames[i]) return i;
  }
  return 0;
}

inline const char* StateName(int state) { return state >= 1 && state <= 5 ? kStateNames[state] : ""; }

inline constexpr int kDefaultMaxAttempts = 3;
inline constexpr double kDefaultErrorMarginPp = 1.0;

// The smallest top-1 within the margin: `top1 >= MarginThreshold(...)` is exactly
// frontier.h's WithinMargin (same expression, same tolerance), for SQL queries that take the
// threshold as a parameter. The SQL views and ListTrials spell the expression the same way.
inline double MarginThreshold(double baseline_top1, double error_margin_pp) {
  return baseline_top1 - error_margin_pp / 100.0 - 1e-9;
}

// The numbers of a result the best-trial bookkeeping needs.
struct ResultSummary {
  int64_t trial_id = 0;
  v1::TrialResult result;  // only top1, top5, size_bits, energy_pj, bops set
};

// A planner trial ready to insert: config parsed, hashed, keyed.
struct PreparedTrial {
  v1::TrialSpec spec;
  std::string canonical_config;
  std::string config_hash;
  std::string dedup_key;
};

// What a call changed outside the database; applied after commit.
struct Effects {
  std::set<int64_t> touched_sweeps;
  CoordinatorMetrics::TrialCounts trial_delta{};
  bool work_queued = false;
  int64_t lease_expiries = 0;
  std::vector<double> trial_durations;
  std::vector<double> stage_durations;
  int64_t attempts = 0;                 // leases handed out
  std::vector<std::string> retries;     // a reason per trial queued again (kRetryReasons)
  std::vector<std::string> reports;
  // Workers whose last_seen_ms this call wrote (TouchWorker's once-a-second cache).
  std::vector<std::pair<std::string, int64_t>> workers_seen;
  // A planner step emitted trials: memory worth giving back afterwards (see ApplyEffects).
  bool planned = false;
  // Sweeps this call moved from queued to running (SweepInfo::known_running once committed).
  std::vector<int64_t> sweeps_started;

  void Move(int from, int to) {
    trial_delta[from] -= 1;
    trial_delta[to] += 1;
  }
};

// A worker call waiting for the next group commit. `run` executes under mu_ inside the batch's
// transaction (and its own savepoint); its answer goes wherever `run` writes it.
struct GroupOp {
  std::function<absl::Status(Effects&)> run;
  absl::Time arrived = absl::Now();  // for bitsweep_store_lock_wait_seconds
  bool force_workers_refresh = false;  // Heartbeat: refresh the workers gauge after commit
  absl::Status status;
};

// The immutable facts of a sweep, cached in memory.
struct SweepInfo {
  int64_t id = 0;
  v1::SweepSpec spec;
  int max_attempts = kDefaultMaxAttempts;
  double error_margin = kDefaultErrorMarginPp;
  std::vector<v1::Objective> objectives;
  // The stored state is known to be past 'queued' (it never goes back): Lease skips the update.
  bool known_running = false;
};

class SqliteCoordinator final : public Coordinator {
 public:
  SqliteCoordinator(const CoordinatorOptions& options, std::unique_ptr<Database> db)
      : options_(options), clock_(options.clock), metrics_(options.metrics), db_(std::move(db)) {}
  ~SqliteCoordinator() override {
    if (expiry_thread_.joinable()) {
      stop_expiry_.Notify();
      expiry_thread_.join();
    }
  }
  // Starts the expiry timer (CoordinatorOptions.expiry_interval) once Init succeeded.
  void StartExpiryTimer() {
    if (options_.expiry_interval <= absl::ZeroDuration()) return;
    expiry_thread_ = std::thread([this] {
      while (!stop_expiry_.WaitForNotificationWithTimeout(options_.expiry_interval)) {
        // Failures (e.g. a busy database) are retried at the next tick.
        (void)ExpireLeases();
      }
    });
  }

  absl::Status Init() ABSL_LOCKS_EXCLUDED(mu_);

  absl::StatusOr<std::unique_ptr<ModelUpload>> StartModelUpload(absl::string_view name) override;
  absl::StatusOr<v1::UploadModelResponse> FinishModelUpload(
      std::unique_ptr<ModelUpload> upload, absl::string_view expected_sha256) override;
  absl::Status ReadModel(absl::string_view model_hash, size_t chunk_bytes,
                         const std::function<bool(int64_t, absl::string_view)>& sink) override;
  absl::StatusOr<v1::UploadModelResponse> PutModel(absl::string_view name,
                                                   const std::string& bytes,
                                                   absl::string_view expected_sha256) override;
  // The model's input channels (ModelInputChannels), cached per hash; nullopt when the model
  // leaves them open or is unknown (SubmitSweep says so).
  absl::StatusOr<std::optional<int64_t>> InputChannelsOf(const std::string& model_hash)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::string> GetModelBytes(absl::string_view model_hash) override;
  absl::StatusOr<v1::Sweep> SubmitSweep(const v1::SweepSpec& spec) override;
  absl::StatusOr<v1::Sweep> GetSweep(int64_t sweep_id) override;
  absl::StatusOr<v1::ListSweepsResponse> ListSweeps(const v1::ListSweepsRequest& r) override;
  absl::StatusOr<v1::Sweep> CancelSweep(int64_t sweep_id) override;
  absl::StatusOr<v1::Sweep> ResumeSweep(int64_t sweep_id) override;
  absl::StatusOr<v1::ListTrialsResponse> ListTrials(const v1::ListTrialsRequest& r) override;
  absl::StatusOr<v1::Frontier> GetFrontier(const v1::GetFrontierRequest& r) override;
  absl::StatusOr<v1::ExportConfigResponse> ExportConfig(
      const v1::ExportConfigRequest& r) override;
  absl::StatusOr<int64_t> WaitForSweepChange(int64_t sweep_id, int64_t seen_version,
                                             absl::Duration timeout) override;
  absl::StatusOr<v1::RegisterResponse> RegisterWorker(const v1::RegisterRequest& r) override;
  absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& r) override;
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r) override;
  absl::StatusOr<v1::ReportResponse> Report(const v1::ReportRequest& r) override;
  absl::StatusOr<v1::ReturnLeasesResponse> ReturnLeases(const v1::ReturnLeasesRequest& r) override;
  absl::StatusOr<v1::InvalidateTrialResponse> InvalidateTrial(int64_t trial_id) override;
  absl::Status ExpireLeases() override;

 private:
  int64_t NowMs() { return absl::ToUnixMillis(clock_->Now()); }

  // --- Small SQL helpers.
  template <typename... Args>
  absl::Status Exec(absl::string_view sql, const Args&... args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ASSIGN_OR_RETURN(Statement statement, db_->Prepare(sql));
    statement.BindAll(args...);
    return statement.Run();
  }
  // The first column of the first row; nullopt for no row or NULL.
  template <typename... Args>
  absl::StatusOr<std::optional<int64_t>> QueryInt(absl::string_view sql, const Args&... args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ASSIGN_OR_RETURN(Statement statement, db_->Prepare(sql));
    statement.BindAll(args...);
    ASSIGN_OR_RETURN(bool row, statement.Step());
    if (!row) return std::optional<int64_t>();
    return statement.OptionalInt64(0);
  }

  // Moves each sweep's version (WaitForSweepChange), inside the caller's transaction.
  absl::Status BumpSweepVersions(const std::set<int64_t>& sweep_ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Bumps the touched sweeps' versions, commits, then applies the effects.
  absl::Status Commit(Transaction& txn, Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `op` in the next group commit (group_commit.cc); returns its status once the
  // transaction holding it has committed (or failed).
  absl::Status RunGrouped(GroupOp& op) ABSL_LOCKS_EXCLUDED(mu_);
  // The leader's part: one transaction, a savepoint per op (when there are several), one commit.
  void RunBatch(const std::vector<GroupOp*>& batch) ABSL_LOCKS_EXCLUDED(mu_);
  void ApplyEffects(const Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RefreshWorkersConnected(bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<SweepInfo*> GetSweepInfo(int64_t sweep_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // INVALID_ARGUMENT unless the result's layers (names and classes, in order) are the model's,
  // as an earlier stored result of the same model listed them; OK when none is stored yet.
  absl::Status CheckLayersOfModel(const std::string& model_hash, const v1::TrialResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // 12 hex digits for a lease id, from a SplitMix64 stream seeded once from OpenSSL's CSPRNG
  // (lease ids need to be distinct, not secret: RAND_bytes per lease cost more than the rest).
  std::string LeaseSuffix() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<const Strategy*> StrategyFor(absl::string_view name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Sweep> BuildSweep(int64_t sweep_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // NOT_FOUND naming the worker (it registers again) unless the worker exists; marks it seen.
  absl::Status TouchWorker(absl::string_view worker_id, int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Planner flow.
  // Moves the trial specs out of `step`.
  absl::StatusOr<std::vector<PreparedTrial>> PrepareTrials(const SweepInfo& sweep,
                                                           PlanStep& step);
  absl::Status InsertTrial(const SweepInfo& sweep, int64_t step_no, const PreparedTrial& trial,
                           int64_t now_ms, Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the strategy for steps until one has unfinished trials or the sweep ends. At submit,
  // planner errors are the caller's (returned); later they fail the sweep.
  absl::Status AdvanceSweep(int64_t sweep_id, bool at_submit, int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status EndSweep(int64_t sweep_id, int state, absl::string_view error, int64_t now_ms,
                        Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<TrialOutcome>> LoadOutcomes(int64_t sweep_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Trial transitions.
  // A trial of `sweep_id` now holds the result stored under `result_trial_id`: baseline and best
  // trial follow.
  // `stored`: the result when this call just stored it (else it is read back).
  absl::Status OnTrialSucceeded(int64_t sweep_id, int64_t trial_id, absl::string_view stage,
                                int64_t result_trial_id, Effects& effects,
                                const v1::TrialResult* stored = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RecomputeBestTrial(int64_t sweep_id, double threshold)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Trials waiting on `original_id` succeed with its result; returns their sweeps.
  absl::StatusOr<std::set<int64_t>> CompleteDuplicates(int64_t original_id, int64_t now_ms,
                                                       Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `original_id` will not produce a result: the oldest trial waiting on it runs instead and
  // the others wait on that one.
  absl::Status PromoteDuplicates(int64_t original_id, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FailTrial(int64_t trial_id, int64_t sweep_id, int from_state,
                         absl::string_view error, int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StoreResult(int64_t trial_id, const SweepInfo& sweep,
                           absl::string_view dedup_key, const v1::ReportRequest& report,
                           int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ExpireLeasesLocked(int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LeaseLocked(const v1::LeaseRequest& r, int64_t now_ms, v1::LeaseResponse& out,
                           Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<bool> ReportLocked(const v1::ReportRequest& r, int64_t now_ms,
                                    Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status HeartbeatLocked(const v1::HeartbeatRequest& r, int64_t now_ms,
                               v1::HeartbeatResponse& response, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  Clock* const clock_;

  // Worker calls waiting for the next group commit, at most 64 to a transaction. Its lock is
  // never held together with mu_: the leader runs the batch (RunBatch, under mu_) outside it.
  GroupCommitQueue<GroupOp> group_commit_{64};

  absl::Mutex mu_;
  absl::CondVar work_available_;  // trials were queued (Lease long-polls wait on it)
  // Bumped (after commit) whenever trials were queued: a Lease that found nothing waits until it
  // moves, so that work queued between its attempt and its wait is not missed.
  int64_t work_generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<SplitMix64> lease_rng_ ABSL_GUARDED_BY(mu_);  // seeded at the first lease
  absl::CondVar sweep_changed_;   // some sweep's version moved (WaitForSweepChange)
  CoordinatorMetrics metrics_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  // Uploaded models as files (created by Init; thread-safe: content-addressed files).
  std::unique_ptr<ModelFiles> model_files_;
  absl::flat_hash_map<std::string, std::optional<int64_t>> input_channels_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, std::unique_ptr<SweepInfo>> sweeps_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Strategy>, std::less<>> strategies_ ABSL_GUARDED_BY(mu_);
  int64_t workers_refreshed_ms_ ABSL_GUARDED_BY(mu_) = std::numeric_limits<int64_t>::min();
  // When each known worker's last_seen_ms was last written (see TouchWorker).
  absl::flat_hash_map<std::string, int64_t> worker_seen_written_ms_ ABSL_GUARDED_BY(mu_);
  // Quantizable layers (name, class) by model hash, from the model's first stored result.
  absl::flat_hash_map<std::string, std::vector<std::pair<std::string, std::string>>>
      model_layers_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_expiry_;
  std::thread expiry_thread_;
};

}  // namespace bitsweep::server::coordinator_internal

#endif  // BITSWEEP_SERVER_COORDINATOR_SQLITE_COORDINATOR_H_
