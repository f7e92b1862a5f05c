#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace bitsweep::worker {
namespace {

constexpr absl::Duration kDefaultHeartbeatInterval = absl::Seconds(10);
// A wait on the trial thread never sleeps longer than this (real time), so a fake clock moved
// by a test is noticed soon.
constexpr absl::Duration kMaxWaitSlice = absl::Milliseconds(250);


bool IsLowerHexSha256(const std::string& s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Streamed: models can be large.
absl::StatusOr<std::string> FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  Sha256 sha;
  char buffer[1 << 16];
  while (in) {
    in.read(buffer, sizeof(buffer));
    if (in.gcount() > 0) sha.Update(buffer, static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read '", path, "'"));
  return sha.HexDigest();
}

// Report failures worth retrying for as long as the lease lives: the coordinator is out of reach,
// restarting, overloaded or out of disk.
bool IsTransientReportFailure(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kCancelled:
      return true;
    default:
      return false;
  }
}

// The coordinator read the report and refused it (a result out of range, a lease that is not
// this worker's any more): repeating it cannot help.
bool IsReportRefusal(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kFailedPrecondition ||
         code == absl::StatusCode::kAlreadyExists || code == absl::StatusCode::kOutOfRange;
}

bool Contains(const google::protobuf::RepeatedPtrField<std::string>& ids, const std::string& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

std::string HostName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return "worker";
  return host;
}

}  // namespace

struct Worker::Metrics {
  prometheus::Counter* reported = nullptr;
  prometheus::Counter* failed = nullptr;
  prometheus::Counter* dropped = nullptr;
  prometheus::Counter* images = nullptr;
  prometheus::Gauge* in_flight = nullptr;
  prometheus::Counter* busy_seconds = nullptr;
  prometheus::Histogram* duration = nullptr;
};

std::string DefaultModelCacheDir() { return DefaultCacheDir("models"); }

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerOptions options) {
  if (options.channel == nullptr && options.coordinator_address.empty()) {
    return absl::InvalidArgumentError("the worker needs a coordinator address (host:port)");
  }
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be >= 1, got ", options.threads));
  }
  if (options.lease_wait < absl::ZeroDuration() || options.backoff_initial <= absl::ZeroDuration() ||
      options.backoff_max < options.backoff_initial || options.rpc_timeout <= absl::ZeroDuration() ||
      options.fetch_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "worker options: lease_wait >= 0, 0 < backoff_initial <= backoff_max, and positive "
        "rpc_timeout and fetch_timeout are required");
  }
  if (options.report_attempts < 1) options.report_attempts = 1;
  if (options.name.empty()) options.name = absl::StrCat(HostName(), "-", getpid());
  if (options.model_cache_dir.empty()) options.model_cache_dir = DefaultModelCacheDir();
  std::error_code ec;
  std::filesystem::create_directories(options.model_cache_dir, ec);
  if (ec || !std::filesystem::is_directory(options.model_cache_dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create the model cache directory '", options.model_cache_dir, "': ",
        ec ? ec.message() : "not a directory"));
  }
  return std::unique_ptr<Worker>(new Worker(std::move(options)));
}

Worker::Worker(WorkerOptions options)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &real_clock_),
      backoff_(options_.backoff_initial) {
  channel_ = options_.channel;
  if (channel_ == nullptr) {
    // gRPC reconnects by itself; bound its reconnect backoff like ours so that a coordinator
    // coming back is noticed within backoff_max, not gRPC's default two minutes.
    grpc::ChannelArguments args;
    const int initial_ms = static_cast<int>(absl::ToInt64Milliseconds(options_.backoff_initial));
    const int max_ms = static_cast<int>(absl::ToInt64Milliseconds(options_.backoff_max));
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::max(1, initial_ms));
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::max(1, initial_ms));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, std::max(1, max_ms));
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(options_.coordinator_address,
                                         grpc::InsecureChannelCredentials(), args);
  }
  stub_ = v1::WorkerService::NewStub(channel_);
  executor_ = options_.executor;
  if (executor_ == nullptr) {
    TrialExecutorOptions executor_options;
    executor_options.threads = options_.threads;
    executor_options.dataset_cache_dir = options_.dataset_cache_dir.empty()
                                             ? DefaultCacheDir("datasets")
                                             : options_.dataset_cache_dir;
    executor_ = std::make_shared<TrialExecutor>(executor_options);
  }
  if (options_.metrics != nullptr) {
    metrics_ = std::make_unique<Metrics>();
    auto& trials = prometheus::BuildCounter()
                       .Name("bitsweep_worker_trials_total")
                       .Help("Trials this worker finished, by outcome: reported (a result), "
                             "failed (an error reported), dropped (cancelled or lease lost)")
                       .Register(*options_.metrics);
    metrics_->reported = &trials.Add({{"worker", options_.name}, {"outcome", "reported"}});
    metrics_->failed = &trials.Add({{"worker", options_.name}, {"outcome", "failed"}});
    metrics_->dropped = &trials.Add({{"worker", options_.name}, {"outcome", "dropped"}});
    metrics_->images = &prometheus::BuildCounter()
                            .Name("bitsweep_worker_eval_images_total")
                            .Help("Images evaluated by the worker's succeeded trials (their "
                                  "rate is the evaluation throughput)")
                            .Register(*options_.metrics)
                            .Add({{"worker", options_.name}});
    metrics_->in_flight = &prometheus::BuildGauge()
                               .Name("bitsweep_worker_trials_in_flight")
                               .Help("Trials the worker is executing now")
                               .Register(*options_.metrics)
                               .Add({{"worker", options_.name}});
    metrics_->busy_seconds = &prometheus::BuildCounter()
                                  .Name("bitsweep_worker_busy_seconds_total")
                                  .Help("Wall time spent executing trials (its rate is the "
                                        "worker's busy fraction)")
                                  .Register(*options_.metrics)
                                  .Add({{"worker", options_.name}});
    auto& duration = prometheus::BuildHistogram()
                         .Name("bitsweep_worker_trial_duration_seconds")
                         .Help("Wall time of a trial on the worker (calibration, tuning, eval)")
                         .Register(*options_.metrics);
    metrics_->duration = &duration.Add(
        {{"worker", options_.name}},
        prometheus::Histogram::BucketBoundaries{0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1,
                                                1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120,
                                                300, 600, 1800});
  }
}

Worker::~Worker() { Stop(); }

void Worker::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  if (call_in_flight_ != nullptr) call_in_flight_->TryCancel();
  if (running_trial_cancel_ != nullptr) running_trial_cancel_->store(true);
}

bool Worker::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

WorkerStats Worker::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Worker::Log(LogLevel level, const std::string& message) const {
  if (!options_.log_to_stderr) return;
  bitsweep::Log(level, absl::StrCat("worker ", options_.name), message);
}

void Worker::CountTrial(const char* outcome) {
  if (metrics_ == nullptr) return;
  const std::string o = outcome;
  if (o == "reported") metrics_->reported->Increment();
  if (o == "failed") metrics_->failed->Increment();
  if (o == "dropped") metrics_->dropped->Increment();
}

bool Worker::BeginCall(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!options_.bearer_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.bearer_token));
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  call_in_flight_ = context;
  return true;
}

void Worker::EndCall() {
  absl::MutexLock lock(&mu_);
  call_in_flight_ = nullptr;
}

template <typename Request, typename Response>
absl::Status Worker::Call(grpc::Status (v1::WorkerService::Stub::*method)(grpc::ClientContext*,
                                                                          const Request&, Response*),
                          const Request& request, Response* response, absl::Duration timeout) {
  grpc::ClientContext context;
  if (!BeginCall(&context, timeout)) return absl::CancelledError("worker stopping");
  const grpc::Status status = (stub_.get()->*method)(&context, request, response);
  EndCall();
  return FromGrpcStatus(status);
}

bool Worker::SleepUnlessStopped(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  // Real time on purpose: backoff protects a real coordinator, whatever clock drives heartbeats.
  mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
  return !stopping_;
}

void Worker::ResetBackoff() { backoff_ = options_.backoff_initial; }

void Worker::HandleFailure(const absl::Status& status, const std::string& method) {
  if (stopping()) return;
  const bool unknown_worker = status.code() == absl::StatusCode::kNotFound && method != "Register";
  if (unknown_worker) {
    Log(LogLevel::kWarning,
        absl::StrCat(method, " failed: NOT_FOUND: ", status.message(), " (the coordinator does "
                     "not know worker '", worker_id_, "'); registering again"));
    worker_id_.clear();
    return;
  }
  const absl::Duration sleep = backoff_;
  // Every failed call, with the backoff it costs (which grows to backoff_max in a long outage).
  Log(LogLevel::kWarning,
      absl::StrCat(method, " failed: ", absl::StatusCodeToString(status.code()), ": ",
                   status.message(),
                   status.code() == absl::StatusCode::kUnauthenticated ||
                           status.code() == absl::StatusCode::kPermissionDenied
                       ? " (check the worker token)"
                       : "",
                   "; retrying in ", absl::FormatDuration(sleep)));
  {
    absl::MutexLock lock(&mu_);
    ++stats_.rpc_failures;
    stats_.last_backoff = sleep;
  }
  backoff_ = std::min(options_.backoff_max, backoff_ * 2);
  SleepUnlessStopped(sleep);
}

absl::Status Worker::Register() {
  v1::RegisterRequest request;
  request.set_name(options_.name);
  request.set_threads(options_.threads);
  request.set_engine_version(kEngineVersion);
  v1::RegisterResponse response;
  RETURN_IF_ERROR(
      Call(&v1::WorkerService::Stub::Register, request, &response, options_.rpc_timeout));
  if (response.worker_id().empty()) {
    return absl::InternalError("the coordinator answered Register without a worker id");
  }
  worker_id_ = response.worker_id();
  heartbeat_interval_ = response.heartbeat_interval_ms() > 0
                            ? absl::Milliseconds(response.heartbeat_interval_ms())
                            : kDefaultHeartbeatInterval;
  // Keep a few heartbeats inside every lease, whatever the coordinator suggests.
  if (response.lease_duration_ms() > 0) {
    heartbeat_interval_ =
        std::min(heartbeat_interval_, absl::Milliseconds(response.lease_duration_ms()) / 3);
  }
  heartbeat_interval_ = std::max(heartbeat_interval_, absl::Milliseconds(1));
  {
    absl::MutexLock lock(&mu_);
    ++stats_.registrations;
    stats_.worker_id = worker_id_;
  }
  Log(LogLevel::kInfo, absl::StrCat("registered as ", worker_id_, " (heartbeat every ",
                                    absl::FormatDuration(heartbeat_interval_), ", ",
                                    options_.threads, " threads, models in ",
                                    options_.model_cache_dir, ")"));
  return absl::OkStatus();
}

absl::Status Worker::Run() {
  // Trials leased by the last report (Report's lease_next); empty: ask Lease (long poll).
  std::vector<v1::LeasedTrial> next;
  while (!stopping()) {
    if (worker_id_.empty()) {
      if (absl::Status s = Register(); !s.ok()) {
        HandleFailure(s, "Register");
        continue;
      }
    }
    if (next.empty()) {
      v1::LeaseRequest request;
      request.set_worker_id(worker_id_);
      request.set_max_trials(1);  // one trial at a time: the engine threads are the worker's size
      request.set_wait_ms(absl::ToInt64Milliseconds(options_.lease_wait));
      v1::LeaseResponse response;
      if (absl::Status s = Call(&v1::WorkerService::Stub::Lease, request, &response,
                                options_.lease_wait + options_.rpc_timeout);
          !s.ok()) {
        HandleFailure(s, "Lease");
        continue;
      }
      ResetBackoff();
      if (response.trials_size() == 0) continue;
      next.assign(response.trials().begin(), response.trials().end());
    }
    for (const v1::LeasedTrial& t : next) {
      Log(LogLevel::kInfo, absl::StrCat("leased trial ", t.trial_id(), " (attempt ", t.attempt(),
                                        ", lease ", t.lease_id(), ")"));
    }
    {
      absl::MutexLock lock(&mu_);
      stats_.leases += next.size();
    }
    next = ProcessTrials(next);
  }
  Log(LogLevel::kInfo, "stopped");
  return absl::OkStatus();
}

std::vector<v1::LeasedTrial> Worker::ProcessTrials(const std::vector<v1::LeasedTrial>& trials) {
  std::set<std::string> live_leases;
  for (const v1::LeasedTrial& t : trials) live_leases.insert(t.lease_id());
  for (const v1::LeasedTrial& trial : trials) {
    if (stopping()) {
      ReturnLeasesOnStop(live_leases);
      return {};
    }
    if (worker_id_.empty()) return {};  // unknown to the coordinator: the leases left expire
    if (!live_leases.contains(trial.lease_id())) {
      absl::MutexLock lock(&mu_);
      ++stats_.dropped;
      continue;
    }
    absl::StatusOr<std::string> model_path = EnsureModel(trial.model_hash());
    if (!model_path.ok()) {
      const absl::StatusCode code = model_path.status().code();
      if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
          code == absl::StatusCode::kCancelled) {
        // The coordinator is out of reach: back off; these leases expire and run again.
        HandleFailure(model_path.status(), "FetchModel");
        return {};
      }
      live_leases.erase(trial.lease_id());
      std::vector<v1::LeasedTrial> next =
          ReportOutcome(trial, model_path.status(), LeaseNextAfter(trial, trials));
      if (!next.empty()) return next;
      continue;
    }
    absl::StatusOr<v1::TrialResult> outcome = absl::UnknownError("not run");
    const TrialFate fate = ExecuteWithHeartbeats(trial, *model_path, &live_leases, &outcome);
    if (fate == TrialFate::kStopped) {
      ReturnLeasesOnStop(live_leases);
      return {};
    }
    live_leases.erase(trial.lease_id());
    if (fate == TrialFate::kDropped) {
      CountTrial("dropped");
      absl::MutexLock lock(&mu_);
      ++stats_.dropped;
      continue;
    }
    std::vector<v1::LeasedTrial> next =
        ReportOutcome(trial, outcome, LeaseNextAfter(trial, trials));
    if (!next.empty()) return next;
  }
  return {};
}

int Worker::LeaseNextAfter(const v1::LeasedTrial& trial,
                           const std::vector<v1::LeasedTrial>& batch) const {
  // The batch's last report asks for the next trial (the worker runs one at a time), saving a
  // Lease call per trial; earlier ones would lease trials that wait behind the batch.
  return &trial == &batch.back() && !stopping() ? 1 : 0;
}


absl::StatusOr<std::string> Worker::EnsureModel(const std::string& model_hash) {
  const std::string hash = absl::AsciiStrToLower(model_hash);
  if (!IsLowerHexSha256(hash)) {
    // Also keeps a hostile hash from naming a path outside the cache.
    return absl::InvalidArgumentError(
        absl::StrCat("model hash '", model_hash, "' is not a hex SHA-256"));
  }
  const std::string path =
      (std::filesystem::path(options_.model_cache_dir) / (hash + ".onnx")).string();
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    if (verified_models_.contains(hash)) return path;
    absl::StatusOr<std::string> digest = FileSha256(path);
    if (digest.ok() && *digest == hash) {
      verified_models_.insert(hash);
      return path;
    }
    Log(LogLevel::kWarning,
        absl::StrCat("cached model ", path, " does not match its hash; fetching it again"));
    std::filesystem::remove(path, ec);
  }
  RETURN_IF_ERROR(FetchModel(hash, path));
  verified_models_.insert(hash);
  return path;
}

absl::Status Worker::FetchModel(const std::string& hash, const std::string& path) {
  // A private temporary name, renamed into place once verified: workers sharing the cache
  // directory never read a partial file.
  static std::atomic<int64_t> fetch_counter{0};
  const std::string temp =
      absl::StrCat(path, ".tmp.", getpid(), ".", fetch_counter.fetch_add(1));
  std::ofstream out(temp, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::FailedPreconditionError(absl::StrCat("cannot write '", temp, "'"));
  }
  v1::FetchModelRequest request;
  request.set_model_hash(hash);
  grpc::ClientContext context;
  if (!BeginCall(&context, options_.fetch_timeout)) {
    std::filesystem::remove(temp);
    return absl::CancelledError("worker stopping");
  }
  std::unique_ptr<grpc::ClientReader<v1::ModelChunk>> reader = stub_->FetchModel(&context, request);
  Sha256 sha;
  int64_t received = 0, expected = -1;
  v1::ModelChunk chunk;
  while (reader->Read(&chunk)) {
    if (expected < 0 && chunk.total_size() > 0) expected = chunk.total_size();
    sha.Update(chunk.data().data(), chunk.data().size());
    out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    received += static_cast<int64_t>(chunk.data().size());
  }
  const grpc::Status status = reader->Finish();
  EndCall();
  out.close();
  auto fail = [&](absl::Status s) {
    std::error_code ec;
    std::filesystem::remove(temp, ec);
    return s;
  };
  if (!status.ok()) {
    absl::Status s = FromGrpcStatus(status);
    if (s.code() == absl::StatusCode::kNotFound) {
      return fail(absl::NotFoundError(
          absl::StrCat("the coordinator has no model ", hash, ": ", s.message())));
    }
    return fail(Annotate(s, absl::StrCat("fetching model ", hash)));
  }
  if (!out) return fail(absl::DataLossError(absl::StrCat("cannot write '", temp, "'")));
  if (expected >= 0 && received != expected) {
    return fail(absl::DataLossError(absl::StrCat("model ", hash, ": received ", received,
                                                 " bytes of ", expected)));
  }
  const std::string digest = sha.HexDigest();
  if (digest != hash) {
    // Transient: a corrupted transfer may pass next time; repeated failures exhaust attempts.
    return fail(absl::DataLossError(absl::StrCat("model ", hash, ": the fetched bytes hash to ",
                                                 digest)));
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("cannot move the model into the cache at '", path, "': ", ec.message())));
  }
  {
    absl::MutexLock lock(&mu_);
    ++stats_.models_fetched;
  }
  Log(LogLevel::kInfo,
      absl::StrCat("fetched model ", hash.substr(0, 12), " (", received, " bytes)"));
  return absl::OkStatus();
}

bool Worker::ExecutionDoneOrStopping() const { return execution_done_ || stopping_; }

Worker::TrialFate Worker::ExecuteWithHeartbeats(const v1::LeasedTrial& trial,
                                                const std::string& model_path,
                                                std::set<std::string>* live_leases,
                                                absl::StatusOr<v1::TrialResult>* outcome) {
  std::atomic<bool> cancel{false};
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return TrialFate::kStopped;
    execution_done_ = false;
    running_trial_cancel_ = &cancel;
  }
  // Busy from here until the engine returns (the runner thread is joined below).
  const absl::Time busy_since = absl::Now();
  if (metrics_ != nullptr) metrics_->in_flight->Increment();
  std::thread runner([&] {
    std::optional<ThreadBudget::Share> share;
    if (options_.thread_budget != nullptr) share.emplace(options_.thread_budget->Take());
    absl::StatusOr<v1::TrialResult> r =
        executor_->Execute({.hash = absl::AsciiStrToLower(trial.model_hash()), .path = model_path},
                           trial.settings(), trial.spec(),
                           {.threads = share ? share->threads() : options_.threads,
                            .cancelled = &cancel});
    share.reset();
    absl::MutexLock lock(&mu_);
    *outcome = std::move(r);
    execution_done_ = true;
  });

  TrialFate fate = TrialFate::kReport;
  absl::Time dropped_at;
  absl::Time next_heartbeat = clock_->Now();  // at once: the trial may be cancelled already
  while (true) {
    if (clock_->Now() >= next_heartbeat) {
      absl::StatusOr<v1::HeartbeatResponse> response = SendHeartbeat(live_leases);
      if (response.ok()) {
        if (!live_leases->contains(trial.lease_id())) {
          Log(LogLevel::kInfo,
              absl::StrCat("trial ", trial.trial_id(), ": ",
                           Contains(response->cancelled_lease_ids(), trial.lease_id())
                               ? "cancelled by the coordinator"
                               : "its lease was lost (expired or given to another worker)",
                           "; stopping it"));
          fate = TrialFate::kDropped;
        }
      } else if (response.status().code() == absl::StatusCode::kNotFound) {
        // The coordinator forgot this worker, and with it every lease we hold.
        Log(LogLevel::kWarning,
            absl::StrCat("Heartbeat failed: NOT_FOUND: ", response.status().message(),
                         " (unknown worker); stopping trial ", trial.trial_id(),
                         " and registering again"));
        worker_id_.clear();
        live_leases->clear();
        fate = TrialFate::kDropped;
      }
      // Other failures: keep working; the lease outlives a few missed heartbeats.
      next_heartbeat = clock_->Now() + heartbeat_interval_;
      if (fate == TrialFate::kDropped) dropped_at = absl::Now();
    }
    if (fate == TrialFate::kDropped) break;
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      fate = TrialFate::kStopped;
      break;
    }
    if (execution_done_) break;
    const absl::Duration until_heartbeat = next_heartbeat - clock_->Now();
    mu_.AwaitWithTimeout(
        absl::Condition(this, &Worker::ExecutionDoneOrStopping),
        std::clamp(until_heartbeat, absl::Milliseconds(1), kMaxWaitSlice));
  }
  if (fate != TrialFate::kReport) cancel.store(true);
  runner.join();  // the engine polls the flag before every batch: this is prompt
  if (fate == TrialFate::kDropped) {
    Log(LogLevel::kInfo, absl::StrCat("trial ", trial.trial_id(), " stopped ",
                                      absl::FormatDuration(absl::Now() - dropped_at),
                                      " after it was dropped"));
  }
  if (metrics_ != nullptr) {
    metrics_->in_flight->Decrement();
    metrics_->busy_seconds->Increment(absl::ToDoubleSeconds(absl::Now() - busy_since));
  }
  {
    absl::MutexLock lock(&mu_);
    running_trial_cancel_ = nullptr;
    if (stopping_ && fate == TrialFate::kReport && !outcome->ok() &&
        outcome->status().code() == absl::StatusCode::kCancelled) {
      fate = TrialFate::kStopped;
    }
  }
  return fate;
}

absl::StatusOr<v1::HeartbeatResponse> Worker::SendHeartbeat(std::set<std::string>* leases) {
  v1::HeartbeatRequest request;
  request.set_worker_id(worker_id_);
  for (const std::string& lease : *leases) request.add_lease_ids(lease);
  v1::HeartbeatResponse response;
  const absl::Status s =
      Call(&v1::WorkerService::Stub::Heartbeat, request, &response, options_.rpc_timeout);
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kNotFound && !stopping()) {
      Log(LogLevel::kWarning, absl::StrCat("Heartbeat failed: ",
                                           absl::StatusCodeToString(s.code()), ": ",
                                           s.message()));
    }
    return s;
  }
  for (const std::string& lease : response.cancelled_lease_ids()) leases->erase(lease);
  for (const std::string& lease : response.lost_lease_ids()) leases->erase(lease);
  return response;
}

void Worker::ReturnLeasesOnStop(const std::set<std::string>& leases) {
  if (leases.empty() || worker_id_.empty()) return;
  v1::ReturnLeasesRequest request;
  request.set_worker_id(worker_id_);
  for (const std::string& lease : leases) request.add_lease_ids(lease);
  // Not through Call(): that refuses to start while stopping. Bounded by its own deadline.
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  if (!options_.bearer_token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.bearer_token));
  }
  v1::ReturnLeasesResponse response;
  const grpc::Status status = stub_->ReturnLeases(&context, request, &response);
  if (status.ok()) {
    Log(LogLevel::kInfo, absl::StrCat("stopping: returned ", response.returned_lease_ids_size(),
                                      " lease(s) to the coordinator"));
  } else {
    Log(LogLevel::kWarning,
        absl::StrCat("ReturnLeases failed: ",
                     absl::StatusCodeToString(FromGrpcStatus(status).code()), ": ",
                     status.error_message(), "; the leases will expire"));
  }
}

std::vector<v1::LeasedTrial> Worker::ReportOutcome(
    const v1::LeasedTrial& trial, const absl::StatusOr<v1::TrialResult>& outcome,
    int lease_next) {
  v1::ReportRequest request;
  request.set_trial_id(trial.trial_id());
  request.set_lease_id(trial.lease_id());
  request.set_lease_next(lease_next);
  if (outcome.ok()) {
    *request.mutable_result() = *outcome;
    if (metrics_ != nullptr) {
      metrics_->images->Increment(static_cast<double>(outcome->samples()));
      metrics_->duration->Observe(outcome->wall_seconds());
    }
  } else {
    *request.mutable_error() = TrialErrorFromStatus(outcome.status());
    Log(LogLevel::kInfo, absl::StrCat("trial ", trial.trial_id(), " failed (",
                                      request.error().permanent() ? "permanent" : "transient",
                                      "): ", request.error().message()));
  }
  // Retried until the coordinator answers: a finished result is worth waiting for. The lease is
  // heartbeated between attempts, which keeps it alive while the coordinator cannot store the
  // report (disk full, lock timeouts) and says when it is gone (cancelled, expired, reassigned).
  std::set<std::string> lease = {trial.lease_id()};
  bool registered_again = false;
  int other_failures = 0;  // failures neither transient nor a refusal (INTERNAL, UNKNOWN, ...)
  std::string undelivered;  // why the outcome was not delivered
  while (true) {
    if (stopping()) {
      undelivered = "the worker is stopping";
      break;
    }
    if (worker_id_.empty()) {
      if (absl::Status s = Register(); !s.ok()) {
        HandleFailure(s, "Register");
        continue;
      }
    }
    request.set_worker_id(worker_id_);
    if (request.has_result()) request.mutable_result()->set_worker_id(worker_id_);
    v1::ReportResponse response;
    const absl::Status s =
        Call(&v1::WorkerService::Stub::Report, request, &response, options_.rpc_timeout);
    if (s.ok()) {
      const bool success = request.has_result();
      CountTrial(success ? "reported" : "failed");
      {
        absl::MutexLock lock(&mu_);
        ++(success ? stats_.reported : stats_.failed);
      }
      if (success) {
        Log(LogLevel::kInfo,
            absl::StrFormat("trial %d done: top1 %.4f, %.1f pJ, %.2f s%s", trial.trial_id(),
                            outcome->top1(), outcome->energy_pj(), outcome->wall_seconds(),
                            response.accepted() ? "" : " (not accepted: already finished)"));
      }
      ResetBackoff();
      return {response.next().begin(), response.next().end()};
    }
    if (stopping()) continue;
    if (s.code() == absl::StatusCode::kNotFound) {
      if (registered_again) {  // unknown trial or lease, not just an unknown worker
        undelivered = absl::StrCat("Report failed: NOT_FOUND: ", s.message());
        break;
      }
      registered_again = true;
      HandleFailure(s, "Report");  // forgets the worker id: register again, then retry
      continue;
    }
    if (IsReportRefusal(s.code()) ||
        (!IsTransientReportFailure(s.code()) && ++other_failures >= options_.report_attempts)) {
      undelivered = absl::StrCat("Report failed: ", absl::StatusCodeToString(s.code()), ": ",
                                 s.message());
      break;
    }
    HandleFailure(s, "Report");
    if (stopping() || worker_id_.empty()) continue;
    if (absl::StatusOr<v1::HeartbeatResponse> h = SendHeartbeat(&lease); h.ok() && lease.empty()) {
      undelivered = Contains(h->cancelled_lease_ids(), trial.lease_id())
                        ? "the trial was cancelled"
                        : "its lease was lost (expired or given to another worker)";
      break;
    }
  }
  Log(stopping() ? LogLevel::kWarning : LogLevel::kError,
      absl::StrCat("trial ", trial.trial_id(), ": ",
                   request.has_result() ? "result" : "error", " not reported: ", undelivered));
  if (stopping() && !lease.empty()) ReturnLeasesOnStop(lease);
  CountTrial("dropped");
  absl::MutexLock lock(&mu_);
  ++stats_.dropped;
  return {};
}

}  // namespace bitsweep::worker
