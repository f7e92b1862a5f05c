// The coordinator's domain: sweeps, trials, leases and results over a SQLite store, with the
// planner deciding what runs next and the frontier kept current. The gRPC services
// (server/service/) are thin layers over this class; `bitsweep local` uses it in-process.
//
//   RealClock clock;
//   ASSIGN_OR_RETURN(auto c, Coordinator::Open({.db_path = "results.db", .clock = &clock}));
//   ASSIGN_OR_RETURN(v1::UploadModelResponse m, c->PutModel("lenet5.onnx", bytes, ""));
//   ASSIGN_OR_RETURN(v1::Sweep s, c->SubmitSweep(spec));
//   // workers: RegisterWorker, Lease, Heartbeat, Report; clients: GetSweep, GetFrontier, ...
//
// Semantics (docs/SERVICE.md, "Guarantees"):
// - Every state change is committed before it is acknowledged, atomically per call: a call's
//   changes commit together or not at all. Concurrent Lease attempts, Reports and Heartbeats are
//   group-committed (one SQLite transaction for the calls queued meanwhile, each call in its own
//   savepoint, so a failing call rolls back only itself); no answer leaves before its commit.
//   Reopening the same file resumes every sweep: queued and expired trials run again, reported
//   results stay, none is stored twice.
// - A sweep's version (WaitForSweepChange) moves at least once per committed transaction that
//   changed the sweep; calls sharing a transaction may share one increment.
// - Leases: Lease hands out the oldest queued trial of the oldest unfinished sweep (FIFO between
//   sweeps) with deadline now + lease_duration; Heartbeat moves the deadline of the worker's live
//   leases; a lease whose deadline passed expires (the trial is queued again; a lost lease).
//   A trial fails after max_attempts reported transient errors, after
//   max(kMinLostLeaseCap, 3 * max_attempts) lost leases, or at once for a permanent error, with
//   the worker's error text. Returned leases (ReturnLeases) count as neither.
// - Report is idempotent per (trial, lease): the first report of an unfinished trial is stored
//   (even from an expired lease: the work is valid) and later ones are refused without change.
//   Only the worker the lease was handed to may report on it (others: FAILED_PRECONDITION). A
//   result out of range (accuracies outside [0, 1], top5 < top1, negative or non-finite costs,
//   totals that are not the sums over the layers, layers other than the model's as an earlier
//   result listed them) is INVALID_ARGUMENT and stores nothing. `accepted` is true only when the
//   report's outcome was stored: a stale lease's transient error is refused.
// - Deduplication: a trial whose (model, eval settings, config hash, fine-tuning) was already
//   evaluated, in this sweep or another, is not run again; it succeeds at once with the earlier
//   result, marked cached.
// - Errors: INVALID_ARGUMENT for bad specs (naming the field and value), NOT_FOUND for unknown
//   ids, FAILED_PRECONDITION for state conflicts; a busy, locked or full database and disk I/O
//   errors are UNAVAILABLE (retry; nothing was committed), other store failures INTERNAL.
#ifndef BITSWEEP_SERVER_COORDINATOR_COORDINATOR_H_
#define BITSWEEP_SERVER_COORDINATOR_COORDINATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "bitsweep/v1/explorer.pb.h"
#include "bitsweep/v1/worker.pb.h"
#include "common/clock.h"
#include "server/coordinator/model_store.h"
#include "server/planner/strategy.h"

namespace prometheus {
class Registry;
}

namespace bitsweep::server {

struct CoordinatorOptions {
  std::string db_path;                      // SQLite file, created (with migrations) if missing
  // Uploaded models, one file per model (model_store.h). Empty: db_path + "-models".
  std::string model_dir;
  // The largest model accepted (protobuf cannot parse more than 2 GiB - 1).
  int64_t max_model_bytes = 2147483647;
  Clock* clock = nullptr;                   // not owned; required
  absl::Duration lease_duration = absl::Seconds(25);
  absl::Duration heartbeat_interval = absl::Seconds(1);  // a cancel reaches a worker this fast
  // A background thread expires leases this often (besides every Lease and Heartbeat), so a
  // dead worker's trial runs again within lease_duration + expiry_interval even when no worker
  // calls. Zero: no thread (tests drive ExpireLeases with a fake clock).
  absl::Duration expiry_interval = absl::Seconds(1);
  // Metrics (trials by state, queue depth, lease expiries, workers, durations, attempts,
  // retries, store latency: CoordinatorMetrics in metrics.h) are registered here when set. Not
  // owned. Per-sweep series come from metrics.h's SweepMetricsCollector.
  prometheus::Registry* metrics = nullptr;
  // Turns SweepSpec.strategy into a strategy; tests inject fakes here. Called once per name
  // (strategies are pure, one instance serves every sweep). Unset: MakeStrategy.
  std::function<absl::StatusOr<std::unique_ptr<Strategy>>(absl::string_view)> strategy_factory =
      MakeStrategy;
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Open(const CoordinatorOptions& options);
  virtual ~Coordinator() = default;

  // --- Models (content-addressed by SHA-256; the bytes must parse as ONNX and pass the checker).
  // Streamed: StartModelUpload, ModelUpload::Append per chunk (to a staging file, hashed as it
  // comes), FinishModelUpload (checked with model_check.h, stored under its hash). Memory stays
  // that of a chunk and the model's structure, whatever the model's size.
  virtual absl::StatusOr<std::unique_ptr<ModelUpload>> StartModelUpload(absl::string_view name) = 0;
  virtual absl::StatusOr<v1::UploadModelResponse> FinishModelUpload(
      std::unique_ptr<ModelUpload> upload, absl::string_view expected_sha256) = 0;
  // A stored model in chunks of at most chunk_bytes: sink(total size, chunk) until it returns
  // false. NOT_FOUND for an unknown hash.
  virtual absl::Status ReadModel(
      absl::string_view model_hash, size_t chunk_bytes,
      const std::function<bool(int64_t, absl::string_view)>& sink) = 0;
  // Whole-model conveniences over the above (tests, small models, QDQ export).
  virtual absl::StatusOr<v1::UploadModelResponse> PutModel(absl::string_view name,
                                                           const std::string& bytes,
                                                           absl::string_view expected_sha256) = 0;
  virtual absl::StatusOr<std::string> GetModelBytes(absl::string_view model_hash) = 0;

  // --- Explorer.
  virtual absl::StatusOr<v1::Sweep> SubmitSweep(const v1::SweepSpec& spec) = 0;
  virtual absl::StatusOr<v1::Sweep> GetSweep(int64_t sweep_id) = 0;
  virtual absl::StatusOr<v1::ListSweepsResponse> ListSweeps(const v1::ListSweepsRequest& r) = 0;
  virtual absl::StatusOr<v1::Sweep> CancelSweep(int64_t sweep_id) = 0;
  // A failed or cancelled sweep runs on: failed and cancelled trials queued again (attempts and
  // lost leases reset), the sweep running, the planner continuing once they finish.
  virtual absl::StatusOr<v1::Sweep> ResumeSweep(int64_t sweep_id) = 0;
  virtual absl::StatusOr<v1::ListTrialsResponse> ListTrials(const v1::ListTrialsRequest& r) = 0;
  virtual absl::StatusOr<v1::Frontier> GetFrontier(const v1::GetFrontierRequest& r) = 0;
  virtual absl::StatusOr<v1::ExportConfigResponse> ExportConfig(
      const v1::ExportConfigRequest& r) = 0;
  // Takes the trial's result (or the one it was cached from) back from deduplication.
  virtual absl::StatusOr<v1::InvalidateTrialResponse> InvalidateTrial(int64_t trial_id) = 0;
  // Blocks (real time, at most `timeout`) until the sweep's version passes `seen_version`;
  // returns the current version (the same one on timeout). Version 0 is never current, so
  // WaitForSweepChange(id, 0, ...) returns at once. NOT_FOUND for unknown sweeps.
  virtual absl::StatusOr<int64_t> WaitForSweepChange(int64_t sweep_id, int64_t seen_version,
                                                     absl::Duration timeout) = 0;

  // --- WorkerService.
  virtual absl::StatusOr<v1::RegisterResponse> RegisterWorker(const v1::RegisterRequest& r) = 0;
  // Long poll: waits up to r.wait_ms (real time) for a queued trial.
  virtual absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& r) = 0;
  virtual absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r) = 0;
  // With r.lease_next > 0, also leases (as Lease without waiting) up to that many trials for
  // the worker, in the same transaction as the report.
  virtual absl::StatusOr<v1::ReportResponse> Report(const v1::ReportRequest& r) = 0;

  // Gives the worker's live leases among r.lease_ids back: trials queued again, no attempt used.
  virtual absl::StatusOr<v1::ReturnLeasesResponse> ReturnLeases(
      const v1::ReturnLeasesRequest& r) = 0;

  // Expires every lease whose deadline passed at clock->Now() and refreshes the workers-connected
  // gauge. Lease and Heartbeat call it too, and so do the expiry timer and every metrics scrape
  // (SweepMetricsCollector), so that both move while no worker calls; public so that tests drive
  // it with a fake clock.
  virtual absl::Status ExpireLeases() = 0;
};

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_COORDINATOR_H_
