// End to end on loopback: a real bitsweep-coordinator process and real bitsweep-worker processes
// run sweeps on the committed LeNet-5; the client talks to them through the Explorer API and the
// test reads the SQLite file the coordinator wrote, as a user would.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/explorer_client.h"
#include "bitsweep/v1/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/service/frontier_sql.h"
#include "tests/service/process.h"
#include "tests/service/sweep_util.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Process;

const std::string kData = std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("bitsweep_service_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  // Starts the coordinator on a free port and connects a client.
  void StartCoordinator(int lease_seconds, int heartbeat_seconds) {
    coordinator_ = std::make_unique<Process>(
        BITSWEEP_COORDINATOR, std::vector<std::string>{
            "--listen=127.0.0.1:0", "--db=" + db(),
            "--lease_seconds=" + std::to_string(lease_seconds),
            "--heartbeat_seconds=" + std::to_string(heartbeat_seconds)},
        (dir_ / "coordinator.log").string());
    std::optional<std::string> port =
        coordinator_->WaitForLine("listening on port ", seconds(30));
    ASSERT_TRUE(port.has_value()) << coordinator_->Log();
    address_ = "127.0.0.1:" + port->substr(0, port->find(','));
    absl::StatusOr<std::unique_ptr<cli::ExplorerClient>> client =
        cli::ExplorerClient::Connect(address_, {});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  std::unique_ptr<Process> StartWorker(const std::string& name) {
    return std::make_unique<Process>(
        BITSWEEP_WORKER, std::vector<std::string>{
            "--coordinator=" + address_, "--threads=1", "--name=" + name,
            "--cache_dir=" + (dir_ / ("cache-" + name)).string()},
        (dir_ / (name + ".log")).string());
  }

  v1::SweepSpec LenetSpec(const std::string& strategy, int64_t eval_limit) {
    absl::StatusOr<std::string> hash = client_->UploadModelFile(BITSWEEP_LENET5_MODEL);
    EXPECT_TRUE(hash.ok()) << hash.status();
    return testing::LenetSweepSpec("integration", strategy, hash.value_or(""), kData, eval_limit);
  }

  // Polls until the sweep is final (the watch stream is tested by the CLI commands).
  v1::Sweep WaitUntilFinal(int64_t sweep_id, seconds timeout) {
    return testing::WaitUntilFinal(*client_, sweep_id, timeout);
  }

  std::vector<v1::Trial> AllTrials(int64_t sweep_id) {
    v1::ListTrialsRequest request;
    request.set_sweep_id(sweep_id);
    request.set_page_size(1000);
    absl::StatusOr<v1::ListTrialsResponse> r = client_->ListTrials(request);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::vector<v1::Trial>(r->trials().begin(), r->trials().end())
                  : std::vector<v1::Trial>{};
  }

  // Runs `sql` (one integer column) on the coordinator's database, read-only.
  std::vector<int64_t> QueryIds(const std::string& sql) { return testing::QueryIds(db(), sql); }

  std::string db() const { return (dir_ / "results.db").string(); }

  fs::path dir_;
  std::string address_;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<cli::ExplorerClient> client_;
};

using testing::FrontierSql;

TEST_F(ServiceTest, RistrettoSweepOnLenetMatchesTheFrontierRecomputedBySql) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(/*lease_seconds=*/30, /*heartbeat_seconds=*/2));
  auto worker1 = StartWorker("w1");
  auto worker2 = StartWorker("w2");
  v1::SweepSpec spec = LenetSpec("ristretto", /*eval_limit=*/1000);
  spec.mutable_finetune()->set_steps(30);
  absl::StatusOr<v1::Sweep> submitted = client_->Submit(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const v1::Sweep sweep = WaitUntilFinal(submitted->id(), seconds(300));
  ASSERT_EQ(sweep.state(), v1::SWEEP_SUCCEEDED)
      << sweep.DebugString() << worker1->Log() << coordinator_->Log();
  ASSERT_TRUE(sweep.has_baseline_top1());
  EXPECT_GT(sweep.baseline_top1(), 0.8);

  // Every stage of the flow ran, each trial exactly once.
  std::set<std::string> stages;
  for (const v1::Trial& t : AllTrials(sweep.id())) {
    stages.insert(t.spec().stage());
    EXPECT_EQ(t.state(), v1::TRIAL_SUCCEEDED) << t.DebugString();
  }
  for (const char* stage : {"baseline", "conv_weights", "fc_weights", "activations", "combined",
                            "finetune"}) {
    EXPECT_TRUE(stages.count(stage)) << stage;
  }

  v1::GetFrontierRequest request;
  request.set_sweep_id(sweep.id());
  request.add_objectives(v1::OBJECTIVE_TOP1);
  request.add_objectives(v1::OBJECTIVE_SIZE);
  absl::StatusOr<v1::Frontier> frontier = client_->GetFrontier(request);
  ASSERT_TRUE(frontier.ok()) << frontier.status();
  std::vector<int64_t> served;
  for (const v1::FrontierPoint& p : frontier->points()) served.push_back(p.trial_id());
  std::sort(served.begin(), served.end());
  EXPECT_EQ(served, QueryIds(FrontierSql(sweep.id())));
  EXPECT_GE(served.size(), 2u);
  // A point within the margin exists: Ristretto's flow finds 8 bits or fewer for LeNet-5.
  bool any_within = false;
  for (const v1::FrontierPoint& p : frontier->points()) any_within |= p.within_margin();
  EXPECT_TRUE(any_within);

  // Results are stored once per evaluated trial.
  EXPECT_EQ(QueryIds("SELECT COUNT(*) FROM results GROUP BY trial_id HAVING COUNT(*) > 1"),
            std::vector<int64_t>{});
}

TEST_F(ServiceTest, WorkerKilledMidTrialLosesNothingAndDuplicatesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(/*lease_seconds=*/2, /*heartbeat_seconds=*/1));
  auto victim = StartWorker("victim");
  // A grid of 4 full-test-set evaluations: each trial runs long enough to be killed inside.
  v1::SweepSpec spec = LenetSpec("grid", /*eval_limit=*/0);
  v1::GridAxis* axis = spec.mutable_space()->add_axes();
  axis->set_selector("default");
  axis->set_role("weights");
  for (const char* f : {"fixed:8", "fixed:6", "fixed:4", "fixed:3"}) axis->add_formats(f);
  absl::StatusOr<v1::Sweep> submitted = client_->Submit(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();

  // Kill the worker while it holds a lease.
  int64_t killed_trial = 0;
  const auto end = std::chrono::steady_clock::now() + seconds(120);
  while (killed_trial == 0 && std::chrono::steady_clock::now() < end) {
    for (const v1::Trial& t : AllTrials(submitted->id())) {
      if (t.state() == v1::TRIAL_RUNNING && t.spec().stage() == "grid") killed_trial = t.id();
    }
    if (killed_trial == 0) std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_NE(killed_trial, 0) << victim->Log();
  victim->Kill(SIGKILL);

  auto rescuer = StartWorker("rescuer");
  const v1::Sweep sweep = WaitUntilFinal(submitted->id(), seconds(300));
  ASSERT_EQ(sweep.state(), v1::SWEEP_SUCCEEDED) << sweep.DebugString() << rescuer->Log();
  const std::vector<v1::Trial> trials = AllTrials(sweep.id());
  ASSERT_EQ(trials.size(), 5u);  // baseline + 4 grid points
  for (const v1::Trial& t : trials) {
    EXPECT_EQ(t.state(), v1::TRIAL_SUCCEEDED) << t.DebugString();
    if (t.id() == killed_trial) {
      EXPECT_GE(t.attempts(), 2) << t.DebugString();
    }
  }
  // One result per trial, none twice.
  EXPECT_EQ(QueryIds("SELECT COUNT(*) FROM results"), std::vector<int64_t>{5});
  EXPECT_EQ(QueryIds("SELECT COUNT(DISTINCT trial_id) FROM results"), std::vector<int64_t>{5});
}

// A worker that dies while idle leaves its long poll open on the coordinator; the trial handed to
// that poll goes back to the queue at once instead of waiting out its (60 s) lease.
TEST_F(ServiceTest, TrialHandedToAGoneLongPollIsQueuedAgainAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(/*lease_seconds=*/60, /*heartbeat_seconds=*/10));
  auto stub = v1::WorkerService::NewStub(
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  auto register_worker = [&](const std::string& name) {
    grpc::ClientContext context;
    v1::RegisterRequest request;
    request.set_name(name);
    v1::RegisterResponse response;
    EXPECT_TRUE(stub->Register(&context, request, &response).ok());
    return response.worker_id();
  };
  const std::string dead = register_worker("dead"), alive = register_worker("alive");
  {
    // The "dead" worker's long poll: 30 s on the coordinator, but the caller leaves after 0.3 s.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + milliseconds(300));
    v1::LeaseRequest request;
    request.set_worker_id(dead);
    request.set_wait_ms(30'000);
    v1::LeaseResponse response;
    EXPECT_EQ(stub->Lease(&context, request, &response).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  v1::SweepSpec spec = LenetSpec("grid", /*eval_limit=*/100);
  spec.mutable_space()->add_axes()->set_selector("default");
  spec.mutable_space()->mutable_axes(0)->set_role("weights");
  spec.mutable_space()->mutable_axes(0)->add_formats("fixed:8");
  absl::StatusOr<v1::Sweep> submitted = client_->Submit(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  // The baseline went to the gone poll first; the live worker gets it within seconds.
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext context;
  v1::LeaseRequest request;
  request.set_worker_id(alive);
  request.set_wait_ms(10'000);
  v1::LeaseResponse response;
  ASSERT_TRUE(stub->Lease(&context, request, &response).ok());
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(response.trials_size(), 1) << coordinator_->Log();
  EXPECT_EQ(response.trials(0).attempt(), 1);  // the returned lease used no attempt
  EXPECT_LT(waited, seconds(5));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(this->db().c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* select = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM leases WHERE outcome = 'returned'", -1,
                               &select, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(select), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(select, 0), 1);
  sqlite3_finalize(select);
  sqlite3_close(db);
}

}  // namespace
}  // namespace bitsweep
