// Worker: the loop that pulls trials from the coordinator's WorkerService and runs them.
//
// Run() registers, then repeats: Lease (long poll) -> for each leased trial, fetch its model by
// hash into the model cache unless it is there (SHA-256 verified) -> execute it on a separate
// thread while this thread heartbeats every heartbeat_interval (the first heartbeat goes out as
// the trial starts, so a trial cancelled while it waited is dropped before it costs much) ->
// Report the result, or a TrialError saying whether retrying can help. The report of a batch's
// last trial also leases the next one (ReportRequest.lease_next), so a busy worker makes one
// call per trial; Lease (long poll) runs only when that report brought nothing back.
//
// Failures never end Run():
// - NOT_FOUND from Register/Lease/Heartbeat/Report: the coordinator forgot this worker (it
//   restarted on a new database, or expired us); register again. During a trial, its lease is
//   then gone too: the trial is dropped.
// - A heartbeat naming the trial's lease as cancelled or lost: the trial is cancelled (its flag
//   set; the engine polls it before every batch, so the worker is free within a batch) and
//   nothing is reported for it; the worker goes on to its next lease.
// - UNAVAILABLE, DEADLINE_EXCEEDED and anything else: wait with exponential backoff (initial,
//   doubling, capped at backoff_max; reset after a successful lease) and try again. The gRPC
//   channel reconnects by itself; its reconnect backoff is set to the same bounds.
// - A finished trial is kept until its report is answered: transient Report failures
//   (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED) are retried with backoff for as
//   long as the lease lives (heartbeats between attempts keep it alive and say when it was
//   cancelled or lost); a refusal (INVALID_ARGUMENT, FAILED_PRECONDITION: e.g. the lease is
//   another worker's now) ends it at once, other errors after report_attempts.
// - FetchModel NOT_FOUND means the coordinator does not know the model: the trial is reported as
//   a permanent error (there is no worker id in that call to be unknown).
// Stop() (any thread) cancels the RPC in flight and the running trial; Run() returns promptly
// (within an engine batch) after giving the leases it holds back (ReturnLeases).
// Lifecycle events and every failed call (method, code, message) are logged to stderr
// (common/log.h) unless log_to_stderr is false.
//
//   WorkerOptions options;
//   options.coordinator_address = "127.0.0.1:7070";
//   ASSIGN_OR_RETURN(std::unique_ptr<Worker> worker, Worker::Create(options));
//   std::thread loop([&] { worker->Run(); });
//   ...
//   worker->Stop();
//   loop.join();
//
// Several Workers may run in one process (`bitsweep local`); give them one shared TrialExecutor
// to share dataset, model and calibration caches, and one prometheus Registry (families are
// labelled by worker name).
#ifndef BITSWEEP_WORKER_WORKER_H_
#define BITSWEEP_WORKER_WORKER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bitsweep/v1/worker.grpc.pb.h"
#include "common/clock.h"
#include "common/log.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "worker/thread_budget.h"
#include "worker/trial_executor.h"

namespace prometheus {
class Registry;
class Gauge;
class Histogram;
class Counter;
}  // namespace prometheus

namespace bitsweep::worker {

struct WorkerOptions {
  // Where the coordinator listens ("host:port"); ignored when `channel` is set.
  std::string coordinator_address;
  // An existing channel (in-process coordinators, tests, TLS set up by the caller).
  std::shared_ptr<grpc::Channel> channel;
  std::string name;  // for people; empty: "<host name>-<pid>"
  int threads = 2;   // engine (OpenMP) threads per trial
  std::string model_cache_dir;  // empty: DefaultModelCacheDir()
  // Decoded image datasets (TrialExecutorOptions::dataset_cache_dir) when the worker makes its
  // own executor; empty: DefaultCacheDir("datasets") (worker/dataset_settings.h).
  std::string dataset_cache_dir;
  absl::Duration lease_wait = absl::Seconds(10);  // Lease long-poll limit
  std::string bearer_token;  // non-empty: every call carries "authorization: Bearer <token>"
  absl::Duration backoff_initial = absl::Milliseconds(200);
  absl::Duration backoff_max = absl::Seconds(15);
  // Deadline of every call besides Lease (lease_wait + this) and FetchModel (fetch_timeout).
  absl::Duration rpc_timeout = absl::Seconds(30);
  absl::Duration fetch_timeout = absl::Minutes(5);
  // Report failures that are neither transient (retried while the lease lives) nor a refusal
  // (given up at once), e.g. INTERNAL, are tried this many times.
  int report_attempts = 8;
  // Decides when heartbeats are due; waits themselves are real time, bounded by the durations
  // above. Not owned; null: the real clock.
  Clock* clock = nullptr;
  // Shared with other workers in the process; null: the worker makes its own.
  std::shared_ptr<TrialExecutor> executor;
  // Cores shared with the other workers of this process; when set, each trial runs with its share
  // (thread_budget.h) instead of `threads`.
  std::shared_ptr<ThreadBudget> thread_budget;
  // Worker metrics are registered here when set (not owned): bitsweep_worker_trials_total
  // {worker, outcome=reported|failed|dropped}, bitsweep_worker_eval_images_total{worker},
  // bitsweep_worker_trials_in_flight{worker}, bitsweep_worker_busy_seconds_total{worker},
  // bitsweep_worker_trial_duration_seconds{worker} (docs/SERVICE.md lists them).
  prometheus::Registry* metrics = nullptr;
  // One line per state change (registered, leased, trial done/dropped, stopping) and per failed
  // call, in common/log.h's format.
  bool log_to_stderr = true;
};

// What the worker has done so far; for tests, logs and `bitsweep local`.
struct WorkerStats {
  std::string worker_id;
  int64_t registrations = 0;
  int64_t leases = 0;           // trials leased
  int64_t reported = 0;         // results reported
  int64_t failed = 0;           // trial errors reported
  int64_t dropped = 0;          // cancelled or lost trials, and outcomes not delivered
  int64_t models_fetched = 0;   // FetchModel downloads
  int64_t rpc_failures = 0;     // failed calls that led to a backoff
  absl::Duration last_backoff;  // the latest backoff slept
};

// DefaultCacheDir("models"): $BITSWEEP_CACHE_DIR/models, else $XDG_CACHE_HOME/bitsweep/models,
// else $HOME/.cache/bitsweep/models, else /tmp/bitsweep-models.
std::string DefaultModelCacheDir();

class Worker {
 public:
  // Checks the options and creates the model cache directory and the channel (connecting is
  // lazy: an absent coordinator is a backoff in Run, not an error here).
  static absl::StatusOr<std::unique_ptr<Worker>> Create(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Works until Stop(); returns OK then. Call once.
  absl::Status Run();
  // Thread-safe; idempotent. Run() returns soon after.
  void Stop();

  WorkerStats stats() const;
  const std::string& name() const { return options_.name; }

 private:
  struct Metrics;
  enum class TrialFate { kReport, kDropped, kStopped };

  explicit Worker(WorkerOptions options);

  // One unary call with deadline, auth metadata and cancellation by Stop().
  template <typename Request, typename Response>
  absl::Status Call(grpc::Status (v1::WorkerService::Stub::*method)(grpc::ClientContext*,
                                                                    const Request&, Response*),
                    const Request& request, Response* response, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Sets the deadline and metadata and makes `context` cancellable by Stop(); false when
  // stopping already.
  bool BeginCall(grpc::ClientContext* context, absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  void EndCall() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Status Register();
  // Logs a failed call of `method` ("Lease", "Report", ...) and backs off (interruptibly);
  // NOT_FOUND forgets the worker id instead.
  void HandleFailure(const absl::Status& status, const std::string& method);
  void ResetBackoff();
  // Sleeps up to `d` real time; returns early (false) when stopping.
  bool SleepUnlessStopped(absl::Duration d) ABSL_LOCKS_EXCLUDED(mu_);
  bool stopping() const ABSL_LOCKS_EXCLUDED(mu_);

  // Runs the leased trials in order; leases dropped by a heartbeat are skipped. Returns the
  // trials the batch's last report leased (Report's lease_next), to run next.
  std::vector<v1::LeasedTrial> ProcessTrials(const std::vector<v1::LeasedTrial>& trials);
  // On Stop: gives the leases still held back to the coordinator (ReturnLeases, at most 2 s) so
  // their trials run elsewhere at once instead of waiting out the lease.
  void ReturnLeasesOnStop(const std::set<std::string>& leases);
  // How many trials the report of `trial` leases for afterwards: 1 after the batch's last.
  int LeaseNextAfter(const v1::LeasedTrial& trial,
                     const std::vector<v1::LeasedTrial>& batch) const;
  // Returns the cached, verified model file, fetching it when needed.
  absl::StatusOr<std::string> EnsureModel(const std::string& model_hash);
  absl::Status FetchModel(const std::string& model_hash, const std::string& path);
  // Executes one trial, heartbeating `live_leases` (this trial's and the queued ones); removes
  // from `live_leases` whatever the coordinator says is cancelled or lost.
  TrialFate ExecuteWithHeartbeats(const v1::LeasedTrial& trial, const std::string& model_path,
                                  std::set<std::string>* live_leases,
                                  absl::StatusOr<v1::TrialResult>* outcome);
  // One Heartbeat for `leases` (logged when it fails); erases those the coordinator names
  // cancelled or lost.
  absl::StatusOr<v1::HeartbeatResponse> SendHeartbeat(std::set<std::string>* leases);
  // Reports until the coordinator answers (retrying transient failures with backoff while
  // heartbeating the lease, re-registering once when forgotten); gives up when the lease is
  // cancelled or lost, the report is refused, or on Stop (returning the lease). Returns the
  // trials leased with it.
  std::vector<v1::LeasedTrial> ReportOutcome(const v1::LeasedTrial& trial,
                                             const absl::StatusOr<v1::TrialResult>& outcome,
                                             int lease_next);
  bool ExecutionDoneOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void Log(LogLevel level, const std::string& message) const;
  void CountTrial(const char* outcome);

  WorkerOptions options_;
  Clock* clock_;
  RealClock real_clock_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::shared_ptr<TrialExecutor> executor_;
  std::unique_ptr<Metrics> metrics_;

  // Loop-thread state (only Run's thread touches these).
  std::string worker_id_;
  absl::Duration heartbeat_interval_ = absl::Seconds(10);
  absl::Duration backoff_;
  std::set<std::string> verified_models_;  // hashes whose cached file matched once

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* call_in_flight_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::atomic<bool>* running_trial_cancel_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool execution_done_ ABSL_GUARDED_BY(mu_) = false;
  WorkerStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bitsweep::worker

#endif  // BITSWEEP_WORKER_WORKER_H_
