// Worker loop against an in-process fake WorkerService on 127.0.0.1: register -> lease -> fetch
// model -> report; cancellation by heartbeat (also in the middle of a long fine-tuning);
// re-registration after NOT_FOUND; backoff while the coordinator is unavailable, then recovery;
// report retries (until accepted, until the lease is lost, refusals, Stop); Stop() during a long
// poll. Durations are tiny and trials evaluate 200 images, so nothing here sleeps long.
#include "worker/worker.h"

#include <openssl/evp.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "worker/trial_executor.h"

namespace bitsweep::worker {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = BITSWEEP_MODELS_DIR "/lenet5.onnx";
constexpr char kFixed8[] =
    R"({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}})";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Sha256Hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) absl::StrAppend(&hex, absl::StrFormat("%02x", digest[i]));
  return hex;
}

v1::EvalSettings SmallSettings() {
  v1::EvalSettings s;
  v1::DatasetRef* d = s.mutable_dataset();
  d->set_train("idx:" BITSWEEP_FASHION_MNIST_DIR "/train");
  d->set_eval("idx:" BITSWEEP_FASHION_MNIST_DIR "/t10k");
  d->add_mean(0.2860f);
  d->add_std(0.3530f);
  d->set_eval_limit(200);
  d->set_calibration_samples(100);
  return s;
}

// Polls `done` every few milliseconds for up to `limit`.
bool WaitFor(const std::function<bool()>& done, absl::Duration limit = absl::Seconds(30)) {
  const absl::Time end = absl::Now() + limit;
  while (absl::Now() < end) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

// A scripted coordinator: a queue of trials, one model, and switches for the failures the worker
// must survive. Records every call.
class FakeWorkerService final : public v1::WorkerService::Service {
 public:
  FakeWorkerService() : model_bytes_(ReadFile(kModel)), model_hash_(Sha256Hex(model_bytes_)) {}

  const std::string& model_hash() const { return model_hash_; }

  // Queues a trial on the fake's model; returns its lease id.
  std::string Enqueue(int64_t trial_id, const std::string& config_json,
                      const std::string& model_hash = "", int64_t finetune_steps = 0) {
    absl::MutexLock lock(&mu_);
    v1::LeasedTrial t;
    t.set_trial_id(trial_id);
    t.set_lease_id(absl::StrCat("lease-", trial_id));
    t.set_attempt(1);
    t.set_model_hash(model_hash.empty() ? model_hash_ : model_hash);
    *t.mutable_settings() = SmallSettings();
    t.mutable_spec()->set_config_json(config_json);
    t.mutable_spec()->mutable_finetune()->set_steps(finetune_steps);
    queue_.push_back(t);
    return t.lease_id();
  }

  void SetUnavailableCalls(int n) {
    absl::MutexLock lock(&mu_);
    unavailable_calls_ = n;
  }
  void SetCancelOnHeartbeat(bool cancel) {
    absl::MutexLock lock(&mu_);
    cancel_on_heartbeat_ = cancel;
  }
  void SetLoseOnHeartbeat(bool lose) {
    absl::MutexLock lock(&mu_);
    lose_on_heartbeat_ = lose;
  }
  // Heartbeats name `lease` cancelled once it was handed out `after` ago.
  void CancelLeaseAfter(const std::string& lease, absl::Duration after) {
    absl::MutexLock lock(&mu_);
    cancel_lease_ = lease;
    cancel_after_ = after;
  }
  // The next `n` Report calls fail with `code` (after being recorded in report_attempts()).
  void FailReports(int n, grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    failing_reports_ = n;
    report_failure_code_ = code;
  }
  // Heartbeats name a lease lost once a report for it was attempted.
  void SetLoseReportedLeases(bool lose) {
    absl::MutexLock lock(&mu_);
    lose_reported_leases_ = lose;
  }
  // When the first heartbeat naming a lease cancelled was answered, and when the next trial was
  // handed out after it (InfinitePast: not yet).
  absl::Time cancel_sent_at() const { absl::MutexLock lock(&mu_); return cancel_sent_at_; }
  absl::Time leased_after_cancel_at() const {
    absl::MutexLock lock(&mu_);
    return leased_after_cancel_at_;
  }
  std::vector<v1::ReportRequest> report_attempts() const {
    absl::MutexLock lock(&mu_);
    return report_attempts_;
  }
  void SetHonorLeaseWait(bool honor) {
    absl::MutexLock lock(&mu_);
    honor_lease_wait_ = honor;
  }
  void SetCorruptModel(bool corrupt) {
    absl::MutexLock lock(&mu_);
    corrupt_model_ = corrupt;
  }
  // The coordinator forgets every worker (as after a restart on a fresh database).
  void ForgetWorkers() {
    absl::MutexLock lock(&mu_);
    known_workers_.clear();
  }

  int registers() const { absl::MutexLock lock(&mu_); return registers_; }
  int heartbeats() const { absl::MutexLock lock(&mu_); return heartbeats_; }
  int fetches() const { absl::MutexLock lock(&mu_); return fetches_; }
  int lease_not_found() const { absl::MutexLock lock(&mu_); return lease_not_found_; }
  int leases_with_trials() const { absl::MutexLock lock(&mu_); return leases_with_trials_; }
  std::vector<v1::ReportRequest> reports() const {
    absl::MutexLock lock(&mu_);
    return reports_;
  }
  std::vector<std::string> authorization() const {
    absl::MutexLock lock(&mu_);
    return authorization_;
  }

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = Common(context); !s.ok()) return s;
    ++registers_;
    const std::string id = absl::StrCat("w", registers_);
    known_workers_.insert(id);
    response->set_worker_id(id);
    response->set_lease_duration_ms(60000);
    response->set_heartbeat_interval_ms(20);
    register_requests_.push_back(*request);
    return grpc::Status::OK;
  }

  grpc::Status Lease(grpc::ServerContext* context, const v1::LeaseRequest* request,
                     v1::LeaseResponse* response) override {
    const absl::Time end = absl::Now() + absl::Milliseconds(request->wait_ms());
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = Common(context); !s.ok()) return s;
    if (!known_workers_.contains(request->worker_id())) {
      ++lease_not_found_;
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("unknown worker '", request->worker_id(), "'"));
    }
    // Long poll: wait for work (honoring cancellation) up to wait_ms, or 20 ms unless asked to
    // honor the whole wait.
    const absl::Time short_end = std::min(end, absl::Now() + absl::Milliseconds(20));
    while (queue_.empty() && !context->IsCancelled() &&
           absl::Now() < (honor_lease_wait_ ? end : short_end)) {
      mu_.AwaitWithTimeout(absl::Condition(+[](std::deque<v1::LeasedTrial>* q) {
                             return !q->empty();
                           }, &queue_),
                           absl::Milliseconds(5));
    }
    if (!queue_.empty()) {
      *response->add_trials() = HandOut();
      ++leases_with_trials_;
    }
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    if (hold_heartbeats_) {  // answer only when the caller gives up: the worker is mid-trial
      heartbeat_held_ = true;
      while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(2));
      return grpc::Status(grpc::StatusCode::CANCELLED, "held");
    }
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = Common(context); !s.ok()) return s;
    if (!known_workers_.contains(request->worker_id())) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown worker");
    }
    ++heartbeats_;
    for (const std::string& lease : request->lease_ids()) {
      const bool cancel_now = lease == cancel_lease_ && leased_at_.contains(lease) &&
                              absl::Now() - leased_at_[lease] >= cancel_after_;
      if (cancel_now && cancel_sent_at_ == absl::InfinitePast()) cancel_sent_at_ = absl::Now();
      if (cancel_on_heartbeat_ || cancel_now) response->add_cancelled_lease_ids(lease);
      const bool reported = std::any_of(report_attempts_.begin(), report_attempts_.end(),
                                        [&](const v1::ReportRequest& r) {
                                          return r.lease_id() == lease;
                                        });
      if (lose_on_heartbeat_ || (lose_reported_leases_ && reported)) {
        response->add_lost_lease_ids(lease);
      }
    }
    response->set_deadline_ms(absl::ToUnixMillis(absl::Now()) + 60000);
    return grpc::Status::OK;
  }

  grpc::Status ReturnLeases(grpc::ServerContext* context, const v1::ReturnLeasesRequest* request,
                            v1::ReturnLeasesResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = Common(context); !s.ok()) return s;
    for (const std::string& lease : request->lease_ids()) {
      returned_.push_back(lease);
      response->add_returned_lease_ids(lease);
    }
    return grpc::Status::OK;
  }
  std::vector<std::string> returned() const {
    absl::MutexLock lock(&mu_);
    return returned_;
  }

  grpc::Status Report(grpc::ServerContext* context, const v1::ReportRequest* request,
                      v1::ReportResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = Common(context); !s.ok()) return s;
    if (!known_workers_.contains(request->worker_id())) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown worker");
    }
    report_attempts_.push_back(*request);
    if (failing_reports_ > 0) {
      --failing_reports_;
      return grpc::Status(report_failure_code_, "scripted: report failed");
    }
    reports_.push_back(*request);
    response->set_accepted(true);
    for (int i = 0; i < request->lease_next() && !queue_.empty(); ++i) {
      *response->add_next() = HandOut();
    }
    return grpc::Status::OK;
  }

  grpc::Status FetchModel(grpc::ServerContext* context, const v1::FetchModelRequest* request,
                          grpc::ServerWriter<v1::ModelChunk>* writer) override {
    std::string bytes;
    {
      absl::MutexLock lock(&mu_);
      if (grpc::Status s = Common(context); !s.ok()) return s;
      ++fetches_;
      if (request->model_hash() != model_hash_) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            absl::StrCat("no model ", request->model_hash()));
      }
      bytes = model_bytes_;
      if (corrupt_model_) bytes[bytes.size() / 2] ^= 0x5a;
    }
    // Several chunks, the total size in the first.
    const size_t chunk = bytes.size() / 3 + 1;
    for (size_t offset = 0; offset < bytes.size(); offset += chunk) {
      v1::ModelChunk c;
      c.set_data(bytes.substr(offset, chunk));
      if (offset == 0) c.set_total_size(static_cast<int64_t>(bytes.size()));
      writer->Write(c);
    }
    return grpc::Status::OK;
  }

 private:
  v1::LeasedTrial HandOut() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::LeasedTrial t = queue_.front();
    queue_.pop_front();
    leased_at_[t.lease_id()] = absl::Now();
    if (cancel_sent_at_ != absl::InfinitePast() &&
        leased_after_cancel_at_ == absl::InfinitePast()) {
      leased_after_cancel_at_ = absl::Now();
    }
    return t;
  }

  // Records the authorization header; fails the call while unavailable calls remain.
  grpc::Status Common(grpc::ServerContext* context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto auth = context->client_metadata().find("authorization");
    authorization_.push_back(auth == context->client_metadata().end()
                                 ? ""
                                 : std::string(auth->second.data(), auth->second.size()));
    if (unavailable_calls_ > 0) {
      --unavailable_calls_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scripted: coordinator unavailable");
    }
    return grpc::Status::OK;
  }

  const std::string model_bytes_;
  const std::string model_hash_;
  mutable absl::Mutex mu_;
  std::deque<v1::LeasedTrial> queue_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> known_workers_ ABSL_GUARDED_BY(mu_);
  int unavailable_calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancel_on_heartbeat_ ABSL_GUARDED_BY(mu_) = false;
  bool lose_on_heartbeat_ ABSL_GUARDED_BY(mu_) = false;
  bool honor_lease_wait_ ABSL_GUARDED_BY(mu_) = false;
  bool corrupt_model_ ABSL_GUARDED_BY(mu_) = false;
  std::string cancel_lease_ ABSL_GUARDED_BY(mu_);
  absl::Duration cancel_after_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> leased_at_ ABSL_GUARDED_BY(mu_);
  absl::Time cancel_sent_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time leased_after_cancel_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int failing_reports_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::StatusCode report_failure_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::UNAVAILABLE;
  bool lose_reported_leases_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<v1::ReportRequest> report_attempts_ ABSL_GUARDED_BY(mu_);
  int registers_ ABSL_GUARDED_BY(mu_) = 0;
  int heartbeats_ ABSL_GUARDED_BY(mu_) = 0;
  int fetches_ ABSL_GUARDED_BY(mu_) = 0;
  int lease_not_found_ ABSL_GUARDED_BY(mu_) = 0;
  int leases_with_trials_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::RegisterRequest> register_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ReportRequest> reports_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> returned_ ABSL_GUARDED_BY(mu_);

 public:
  std::atomic<bool> hold_heartbeats_{false};
  std::atomic<bool> heartbeat_held_{false};
  std::vector<std::string> authorization_ ABSL_GUARDED_BY(mu_);
};

// A gRPC server for the fake on 127.0.0.1 (port 0: any free port).
struct FakeServer {
  explicit FakeServer(FakeWorkerService* service, int port = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &bound_port);
    builder.RegisterService(service);
    server = builder.BuildAndStart();
  }
  ~FakeServer() {
    if (server) server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", bound_port); }
  int bound_port = 0;
  std::unique_ptr<grpc::Server> server;
};

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_dir_ = (std::filesystem::temp_directory_path() /
                  absl::StrCat("bitsweep-worker-test-", getpid(), "-",
                               ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                     .string();
    std::filesystem::remove_all(cache_dir_);
  }
  void TearDown() override {
    StopWorker();
    std::filesystem::remove_all(cache_dir_);
  }

  WorkerOptions Options(const std::string& address) {
    WorkerOptions o;
    o.coordinator_address = address;
    o.name = "test-worker";
    o.threads = 1;
    o.model_cache_dir = cache_dir_;
    o.lease_wait = absl::Milliseconds(50);
    o.backoff_initial = absl::Milliseconds(5);
    o.backoff_max = absl::Milliseconds(40);
    o.rpc_timeout = absl::Seconds(5);
    o.executor = executor_;
    return o;
  }

  void StartWorker(WorkerOptions options) {
    absl::StatusOr<std::unique_ptr<Worker>> w = Worker::Create(std::move(options));
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = *std::move(w);
    loop_ = std::thread([this] { run_status_ = worker_->Run(); });
  }

  void StopWorker() {
    if (worker_ == nullptr) return;
    worker_->Stop();
    if (loop_.joinable()) loop_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_;
  }

  // One executor for every test: datasets load once.
  static inline std::shared_ptr<TrialExecutor> executor_ =
      std::make_shared<TrialExecutor>(TrialExecutorOptions{.threads = 1});
  std::string cache_dir_;
  std::unique_ptr<Worker> worker_;
  std::thread loop_;
  absl::Status run_status_;
};

TEST_F(WorkerTest, RegistersLeasesFetchesAndReportsCorrectResults) {
  FakeWorkerService service;
  FakeServer server(&service);
  WorkerOptions options = Options(server.address());
  options.bearer_token = "s3cret";
  StartWorker(options);
  const std::string lease1 = service.Enqueue(1, kFixed8);
  const std::string lease2 = service.Enqueue(2, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 2; }));

  const std::vector<v1::ReportRequest> reports = service.reports();
  EXPECT_EQ(reports[0].trial_id(), 1);
  EXPECT_EQ(reports[0].lease_id(), lease1);
  EXPECT_EQ(reports[0].worker_id(), "w1");
  ASSERT_TRUE(reports[0].has_result()) << reports[0].error().message();
  EXPECT_EQ(reports[0].result().worker_id(), "w1");
  EXPECT_EQ(reports[1].lease_id(), lease2);
  ASSERT_TRUE(reports[1].has_result()) << reports[1].error().message();

  // The reported result is the executor's for the same trial.
  v1::TrialSpec spec;
  spec.set_config_json(kFixed8);
  absl::StatusOr<v1::TrialResult> expected = executor_->Execute(
      {.hash = service.model_hash(), .path = kModel}, SmallSettings(), spec);
  ASSERT_TRUE(expected.ok()) << expected.status();
  const v1::TrialResult& got = reports[0].result();
  EXPECT_EQ(got.top1(), expected->top1());
  EXPECT_EQ(got.samples(), 200);
  EXPECT_EQ(got.size_bits(), expected->size_bits());
  EXPECT_DOUBLE_EQ(got.energy_pj(), expected->energy_pj());
  EXPECT_EQ(got.engine_version(), kEngineVersion);
  ASSERT_GT(got.layers_size(), 0);
  EXPECT_TRUE(got.layers(0).weights().has_fractional_bits());
  EXPECT_GT(got.top1(), 0.7);

  // The model was fetched once, verified and cached under its hash.
  EXPECT_EQ(service.fetches(), 1);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(cache_dir_) /
                                      (service.model_hash() + ".onnx")));
  EXPECT_GE(service.heartbeats(), 2);  // at least one per trial
  for (const std::string& auth : service.authorization()) EXPECT_EQ(auth, "Bearer s3cret");

  ASSERT_TRUE(WaitFor([&] { return worker_->stats().reported == 2; }));
  const WorkerStats stats = worker_->stats();
  EXPECT_EQ(stats.registrations, 1);
  EXPECT_EQ(stats.models_fetched, 1);
  EXPECT_EQ(stats.worker_id, "w1");
}

TEST_F(WorkerTest, EachReportLeasesTheNextTrial) {
  FakeWorkerService service;
  FakeServer server(&service);
  for (int64_t id = 1; id <= 3; ++id) service.Enqueue(id, kFixed8);
  StartWorker(Options(server.address()));
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().reported == 3; }));

  // One Lease call started the run; each report asked for the next trial and got it.
  EXPECT_EQ(service.leases_with_trials(), 1);
  const std::vector<v1::ReportRequest> reports = service.reports();
  ASSERT_EQ(reports.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(reports[i].trial_id(), i + 1);
    EXPECT_EQ(reports[i].lease_next(), 1);
    EXPECT_TRUE(reports[i].has_result()) << reports[i].error().message();
  }
  EXPECT_EQ(worker_->stats().leases, 3);
  // Nothing came with the last report: the worker long-polls Lease again and runs what comes.
  service.Enqueue(4, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().reported == 4; }));
  EXPECT_EQ(service.leases_with_trials(), 2);
}

TEST_F(WorkerTest, ReportsTrialErrorsWithPermanence) {
  FakeWorkerService service;
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  service.Enqueue(7, R"({"default": {"weights": "fixd:8"}})");
  service.Enqueue(8, "{}", std::string(64, 'a'));  // a model the coordinator does not have
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 2; }));
  const std::vector<v1::ReportRequest> reports = service.reports();
  ASSERT_TRUE(reports[0].has_error());
  EXPECT_TRUE(reports[0].error().permanent());
  EXPECT_THAT(reports[0].error().message(), HasSubstr("fixd:8"));
  ASSERT_TRUE(reports[1].has_error());
  EXPECT_TRUE(reports[1].error().permanent());
  EXPECT_THAT(reports[1].error().message(), HasSubstr(std::string(64, 'a')));
  // The worker counts a report once the call returns, just after the fake recorded it.
  EXPECT_TRUE(WaitFor([&] { return worker_->stats().failed == 2; }));
}

TEST_F(WorkerTest, CorruptModelTransferIsATransientError) {
  FakeWorkerService service;
  service.SetCorruptModel(true);
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  service.Enqueue(3, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 1; }));
  const v1::ReportRequest report = service.reports()[0];
  ASSERT_TRUE(report.has_error());
  EXPECT_FALSE(report.error().permanent());
  EXPECT_THAT(report.error().message(), HasSubstr("hash"));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(cache_dir_) /
                                       (service.model_hash() + ".onnx")));
  // The next attempt gets good bytes and succeeds.
  service.SetCorruptModel(false);
  service.Enqueue(4, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 2; }));
  EXPECT_TRUE(service.reports()[1].has_result());
}

TEST_F(WorkerTest, TrialCancelledByHeartbeatIsNotReported) {
  FakeWorkerService service;
  service.SetCancelOnHeartbeat(true);
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  service.Enqueue(11, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().dropped == 1; }));
  EXPECT_GE(service.heartbeats(), 1);

  // A lost lease is dropped the same way.
  service.SetCancelOnHeartbeat(false);
  service.SetLoseOnHeartbeat(true);
  service.Enqueue(12, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().dropped == 2; }));

  // The worker carries on: the next trial is reported, and it is the only report.
  service.SetLoseOnHeartbeat(false);
  service.Enqueue(13, "{}");
  ASSERT_TRUE(WaitFor([&] { return !service.reports().empty(); }));
  absl::SleepFor(absl::Milliseconds(50));
  const std::vector<v1::ReportRequest> reports = service.reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].trial_id(), 13);
}

TEST_F(WorkerTest, TrialCancelledDuringALongFineTuningFreesTheWorker) {
  FakeWorkerService service;
  FakeServer server(&service);
  const std::string lease = service.Enqueue(14, kFixed8, "", /*finetune_steps=*/1'000'000);
  service.Enqueue(15, "{}");  // waits: the worker runs one trial at a time
  // Two seconds in, the trial is fine-tuning (a million steps: hours if nothing stopped it).
  service.CancelLeaseAfter(lease, absl::Seconds(2));
  StartWorker(Options(server.address()));
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 1; }, absl::Seconds(60)));
  const std::vector<v1::ReportRequest> reports = service.reports();
  EXPECT_EQ(reports[0].trial_id(), 15);  // nothing for the cancelled trial
  EXPECT_TRUE(reports[0].has_result()) << reports[0].error().message();
  // The worker counts a report once the service's answer is back, just after the service saw it.
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().reported == 1; }));
  EXPECT_EQ(worker_->stats().dropped, 1);
  std::printf("cancel answered -> next trial leased: %s\n",
              absl::FormatDuration(service.leased_after_cancel_at() - service.cancel_sent_at())
                  .c_str());
}

TEST_F(WorkerTest, KeepsAFinishedResultUntilItsReportIsAccepted) {
  FakeWorkerService service;
  service.FailReports(3, grpc::StatusCode::UNAVAILABLE);
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  service.Enqueue(16, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().reported == 1; }));
  // Delivered once, on the fourth attempt, and every attempt carried the same bytes.
  const std::vector<v1::ReportRequest> attempts = service.report_attempts();
  ASSERT_EQ(attempts.size(), 4u);
  for (const v1::ReportRequest& a : attempts) {
    EXPECT_EQ(a.SerializeAsString(), attempts[0].SerializeAsString());
  }
  const std::vector<v1::ReportRequest> reports = service.reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].SerializeAsString(), attempts[0].SerializeAsString());
  ASSERT_TRUE(reports[0].has_result());
  EXPECT_EQ(reports[0].result().samples(), 200);
  EXPECT_GT(reports[0].result().top1(), 0.7);
  const WorkerStats stats = worker_->stats();
  EXPECT_EQ(stats.dropped, 0);
  EXPECT_GE(stats.rpc_failures, 3);
  // The lease was heartbeated between attempts, so it stayed alive meanwhile.
  EXPECT_GE(service.heartbeats(), 1 + 3);
}

TEST_F(WorkerTest, StopsRetryingAReportWhenItsLeaseIsLost) {
  FakeWorkerService service;
  service.FailReports(1'000'000, grpc::StatusCode::UNAVAILABLE);
  service.SetLoseReportedLeases(true);
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  service.Enqueue(17, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().dropped == 1; }));
  EXPECT_TRUE(service.reports().empty());
  const size_t attempts = service.report_attempts().size();
  EXPECT_GE(attempts, 1u);
  // The worker moved on: the next trial is reported once reports go through again.
  service.FailReports(0, grpc::StatusCode::UNAVAILABLE);
  service.Enqueue(18, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 1; }));
  EXPECT_EQ(service.reports()[0].trial_id(), 18);
  for (size_t i = 0; i < attempts; ++i) EXPECT_EQ(service.report_attempts()[i].trial_id(), 17);
}

TEST_F(WorkerTest, ARefusedReportIsNotRetried) {
  FakeWorkerService service;
  service.FailReports(1, grpc::StatusCode::FAILED_PRECONDITION);  // e.g. not the lease holder
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  service.Enqueue(19, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().dropped == 1; }));
  EXPECT_EQ(service.report_attempts().size(), 1u);
  EXPECT_TRUE(service.reports().empty());
  EXPECT_EQ(worker_->stats().rpc_failures, 0);  // no backoff either
}

TEST_F(WorkerTest, StopDuringReportRetriesReturnsTheLease) {
  FakeWorkerService service;
  service.FailReports(1'000'000, grpc::StatusCode::UNAVAILABLE);
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  const std::string lease = service.Enqueue(20, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return service.report_attempts().size() >= 2; }));
  StopWorker();
  EXPECT_EQ(service.returned(), std::vector<std::string>{lease});
  EXPECT_TRUE(service.reports().empty());
}

TEST_F(WorkerTest, RegistersAgainAfterNotFound) {
  FakeWorkerService service;
  FakeServer server(&service);
  StartWorker(Options(server.address()));
  ASSERT_TRUE(WaitFor([&] { return service.registers() == 1; }));
  service.ForgetWorkers();
  ASSERT_TRUE(WaitFor([&] { return service.registers() == 2; }));
  EXPECT_GE(service.lease_not_found(), 1);
  service.Enqueue(21, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 1; }));
  EXPECT_EQ(service.reports()[0].worker_id(), "w2");
  EXPECT_EQ(worker_->stats().worker_id, "w2");
  EXPECT_EQ(worker_->stats().rpc_failures, 0);  // NOT_FOUND is not a backoff
}

TEST_F(WorkerTest, BacksOffWhileUnavailableThenRecovers) {
  FakeWorkerService service;
  service.SetUnavailableCalls(6);
  FakeServer server(&service);
  const absl::Time start = absl::Now();
  StartWorker(Options(server.address()));
  ASSERT_TRUE(WaitFor([&] { return service.registers() == 1; }));
  // 5 + 10 + 20 + 40 + 40 + 40 ms: doubling, capped at backoff_max.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(150));
  const WorkerStats stats = worker_->stats();
  EXPECT_EQ(stats.rpc_failures, 6);
  EXPECT_EQ(stats.last_backoff, absl::Milliseconds(40));
  service.Enqueue(31, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 1; }));
  EXPECT_TRUE(service.reports()[0].has_result());
}

TEST_F(WorkerTest, WaitsForACoordinatorThatStartsLater) {
  // Find a free port, then leave it closed: the worker starts before its coordinator.
  int port = 0;
  {
    FakeWorkerService placeholder;
    FakeServer probe(&placeholder);
    port = probe.bound_port;
  }
  ASSERT_GT(port, 0);
  StartWorker(Options(absl::StrCat("127.0.0.1:", port)));
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().rpc_failures >= 3; }));
  EXPECT_EQ(worker_->stats().registrations, 0);

  FakeWorkerService service;
  FakeServer server(&service, port);
  ASSERT_EQ(server.bound_port, port);
  service.Enqueue(41, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 1; }, absl::Seconds(20)));
  EXPECT_EQ(worker_->stats().registrations, 1);
}

TEST_F(WorkerTest, StopEndsALongPollPromptly) {
  FakeWorkerService service;
  service.SetHonorLeaseWait(true);
  FakeServer server(&service);
  WorkerOptions options = Options(server.address());
  options.lease_wait = absl::Seconds(30);
  StartWorker(options);
  ASSERT_TRUE(WaitFor([&] { return service.registers() == 1; }));
  absl::SleepFor(absl::Milliseconds(50));  // inside the long poll
  const absl::Time stop = absl::Now();
  StopWorker();
  EXPECT_LT(absl::Now() - stop, absl::Seconds(2));
}

TEST_F(WorkerTest, StopReturnsTheLeaseOfTheRunningTrial) {
  FakeWorkerService service;
  FakeServer server(&service);
  service.hold_heartbeats_ = true;
  StartWorker(Options(server.address()));
  const std::string lease = service.Enqueue(61, kFixed8);
  ASSERT_TRUE(WaitFor([&] { return service.heartbeat_held_.load(); }));  // the trial is running
  StopWorker();
  EXPECT_EQ(service.returned(), std::vector<std::string>{lease});
  EXPECT_TRUE(service.reports().empty());
}

TEST_F(WorkerTest, UsesAGivenChannel) {
  FakeWorkerService service;
  FakeServer server(&service);
  WorkerOptions options = Options("");
  options.channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  StartWorker(options);
  service.Enqueue(51, "{}");
  ASSERT_TRUE(WaitFor([&] { return service.reports().size() == 1; }));
  EXPECT_TRUE(service.reports()[0].has_result());
  EXPECT_EQ(service.authorization()[0], "");  // no token, no header
}

TEST_F(WorkerTest, ExportsMetrics) {
  FakeWorkerService service;
  FakeServer server(&service);
  prometheus::Registry registry;
  WorkerOptions options = Options(server.address());
  options.metrics = &registry;
  StartWorker(options);
  service.Enqueue(61, "{}");
  service.Enqueue(62, R"({"default": {"weights": "fixd:8"}})");
  ASSERT_TRUE(WaitFor([&] { return worker_->stats().failed == 1; }));
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_THAT(text, HasSubstr(
      R"(bitsweep_worker_trials_total{outcome="reported",worker="test-worker"} 1)"));
  EXPECT_THAT(text, HasSubstr(
      R"(bitsweep_worker_trials_total{outcome="failed",worker="test-worker"} 1)"));
  EXPECT_THAT(text, HasSubstr(
      R"(bitsweep_worker_trial_duration_seconds_count{worker="test-worker"} 1)"));
  // Images: the evaluated samples of the one result (the failed trial evaluated none).
  int64_t samples = -1;
  for (const v1::ReportRequest& report : service.reports()) {
    if (report.has_result()) samples = report.result().samples();
  }
  ASSERT_GT(samples, 0);
  EXPECT_THAT(text, HasSubstr(absl::StrCat(
      R"(bitsweep_worker_eval_images_total{worker="test-worker"} )", samples, "\n")));
  EXPECT_THAT(text, HasSubstr(R"(bitsweep_worker_trials_in_flight{worker="test-worker"} 0)"));
  // Both trials took some wall time on the worker.
  EXPECT_THAT(text, HasSubstr("bitsweep_worker_busy_seconds_total{worker=\"test-worker\"}"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr(
      R"(bitsweep_worker_busy_seconds_total{worker="test-worker"} 0)" "\n")));
}

TEST(WorkerCreateTest, RejectsBadOptions) {
  WorkerOptions none;
  EXPECT_EQ(Worker::Create(none).status().code(), absl::StatusCode::kInvalidArgument);
  WorkerOptions threads;
  threads.coordinator_address = "127.0.0.1:1";
  threads.threads = 0;
  EXPECT_EQ(Worker::Create(threads).status().code(), absl::StatusCode::kInvalidArgument);
  WorkerOptions backoff;
  backoff.coordinator_address = "127.0.0.1:1";
  backoff.backoff_initial = absl::Seconds(2);
  backoff.backoff_max = absl::Seconds(1);
  EXPECT_EQ(Worker::Create(backoff).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WorkerCreateTest, DefaultModelCacheDirFollowsXdg) {
  const char* old = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old ? old : "";
  setenv("XDG_CACHE_HOME", "/tmp/xdg-test", 1);
  EXPECT_EQ(DefaultModelCacheDir(), "/tmp/xdg-test/bitsweep/models");
  unsetenv("XDG_CACHE_HOME");
  EXPECT_THAT(DefaultModelCacheDir(), HasSubstr(".cache/bitsweep/models"));
  if (old) setenv("XDG_CACHE_HOME", saved.c_str(), 1);
}

}  // namespace
}  // namespace bitsweep::worker
