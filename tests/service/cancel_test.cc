// Cancel means stop, with real processes on loopback: a bitsweep-worker fine-tuning a trial of a
// million steps (hours of work) is freed by cancelling its sweep -- it takes and finishes the next
// sweep's trial -- and stops on SIGTERM, giving its lease back. Waits are bounded (20 s); the
// measured times are printed (the target is 2 s with --heartbeat_seconds=1: the worker hears of a
// cancel at its next heartbeat and the engine stops within a batch).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/explorer_client.h"
#include "gtest/gtest.h"
#include "tests/service/cluster_util.h"
#include "tests/service/frontier_sql.h"
#include "tests/service/process.h"
#include "tests/service/sweep_util.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;
using testing::Process;

const std::string kData = std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR;
constexpr auto kBound = seconds(20);  // the longest any stop may take here

double SecondsSince(steady_clock::time_point start) {
  return std::chrono::duration<double>(steady_clock::now() - start).count();
}

class CancelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("bitsweep_cancel");
    coordinator_ =
        testing::StartLoopbackCoordinator(dir_, {"--lease_seconds=30", "--heartbeat_seconds=1"});
    ASSERT_NE(coordinator_.client, nullptr) << coordinator_.process->Log();
    client_ = coordinator_.client.get();
    absl::StatusOr<std::string> hash = client_->UploadModelFile(BITSWEEP_LENET5_MODEL);
    ASSERT_TRUE(hash.ok()) << hash.status();
    model_hash_ = *hash;
    worker_ = std::make_unique<Process>(
        BITSWEEP_WORKER,
        std::vector<std::string>{"--coordinator=" + coordinator_.address, "--threads=1",
                                 "--name=w1",
                                 "--cache_dir=" + (dir_ / "models").string(),
                                 "--dataset_cache_dir=" + (dir_ / "datasets").string()},
        (dir_ / "worker.log").string());
  }

  std::vector<v1::Trial> Trials(int64_t sweep_id) {
    return testing::ListAllTrials(*client_, sweep_id);
  }

  // Submits Ristretto's flow with one candidate per group (a few short trials) ending in a
  // fine-tuning of a million steps, and waits until that trial has been running for 3 s: well
  // inside its training loop. Returns the sweep and the fine-tuning trial.
  std::pair<int64_t, int64_t> StartLongFineTuning() {
    v1::SweepSpec spec = testing::LenetSweepSpec("long finetune", "ristretto", model_hash_, kData,
                                                 /*eval_limit=*/100);
    spec.mutable_space()->add_weight_formats("fixed:8");
    spec.mutable_space()->add_activation_formats("fixed:8");
    spec.mutable_finetune()->set_steps(1'000'000);
    absl::StatusOr<v1::Sweep> sweep = client_->Submit(spec);
    EXPECT_TRUE(sweep.ok()) << sweep.status();
    if (!sweep.ok()) return {0, 0};
    int64_t finetune = 0;
    const auto end = steady_clock::now() + seconds(180);
    while (finetune == 0 && steady_clock::now() < end) {
      for (const v1::Trial& t : Trials(sweep->id())) {
        if (t.spec().stage() == "finetune" && t.state() == v1::TRIAL_RUNNING) finetune = t.id();
      }
      if (finetune == 0) std::this_thread::sleep_for(milliseconds(50));
    }
    EXPECT_NE(finetune, 0) << worker_->Log() << coordinator_.process->Log();
    std::this_thread::sleep_for(seconds(3));
    return {sweep->id(), finetune};
  }

  fs::path dir_;
  testing::LoopbackCoordinator coordinator_;
  cli::ExplorerClient* client_ = nullptr;  // coordinator_'s
  std::string model_hash_;
  std::unique_ptr<Process> worker_;
};

TEST_F(CancelTest, CancellingASweepFreesAFineTuningWorkerForTheNextSweep) {
  auto [long_sweep, finetune] = StartLongFineTuning();
  ASSERT_NE(finetune, 0);
  // The next sweep waits behind the busy worker. Another eval_limit: nothing of it is served
  // from the first sweep's results.
  v1::SweepSpec next_spec =
      testing::LenetSweepSpec("next", "grid", model_hash_, kData, /*eval_limit=*/150);
  v1::GridAxis* axis = next_spec.mutable_space()->add_axes();
  axis->set_selector("default");
  axis->set_role("weights");
  axis->add_formats("fixed:6");
  absl::StatusOr<v1::Sweep> next = client_->Submit(next_spec);
  ASSERT_TRUE(next.ok()) << next.status();
  for (const v1::Trial& t : Trials(next->id())) ASSERT_EQ(t.state(), v1::TRIAL_QUEUED);

  const auto cancelled_at = steady_clock::now();
  absl::StatusOr<v1::Sweep> cancelled = client_->Cancel(long_sweep);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  double leased_after = -1;
  while (leased_after < 0 && steady_clock::now() < cancelled_at + kBound) {
    for (const v1::Trial& t : Trials(next->id())) {
      if (t.state() != v1::TRIAL_QUEUED) leased_after = SecondsSince(cancelled_at);
    }
    if (leased_after < 0) std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_GE(leased_after, 0) << "the worker took no new trial within 20 s of the cancel\n"
                             << worker_->Log();
  std::printf("cancel -> the worker's next lease: %.2f s\n", leased_after);
  RecordProperty("cancel_to_next_lease_ms", static_cast<int>(leased_after * 1000));

  const v1::Sweep done = testing::WaitUntilFinal(*client_, next->id(), seconds(120));
  EXPECT_EQ(done.state(), v1::SWEEP_SUCCEEDED) << done.DebugString() << worker_->Log();
  // The worker stopped the fine-tuning (its log says when) and reported nothing for it.
  const std::string log = worker_->Log();
  EXPECT_NE(log.find(absl::StrCat("trial ", finetune, ": cancelled by the coordinator")),
            std::string::npos)
      << log;
  EXPECT_EQ(testing::QueryIds(coordinator_.db,
                              absl::StrCat("SELECT COUNT(*) FROM results WHERE trial_id = ",
                                           finetune)),
            std::vector<int64_t>{0});
  EXPECT_TRUE(worker_->Running());
}

TEST_F(CancelTest, SigtermStopsAFineTuningWorkerAndReturnsItsLease) {
  auto [long_sweep, finetune] = StartLongFineTuning();
  ASSERT_NE(finetune, 0);
  const auto signalled_at = steady_clock::now();
  ASSERT_EQ(::kill(worker_->pid(), SIGTERM), 0);
  while (worker_->Running() && steady_clock::now() < signalled_at + kBound) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  const double exited_after = SecondsSince(signalled_at);
  ASSERT_FALSE(worker_->Running()) << "the worker still runs 20 s after SIGTERM\n"
                                   << worker_->Log();
  std::printf("SIGTERM -> the worker exited: %.2f s\n", exited_after);
  RecordProperty("sigterm_to_exit_ms", static_cast<int>(exited_after * 1000));
  EXPECT_NE(worker_->Log().find("returned 1 lease(s) to the coordinator"), std::string::npos)
      << worker_->Log();
  // The trial went back to the queue at once, for another worker.
  for (const v1::Trial& t : Trials(long_sweep)) {
    if (t.id() == finetune) {
      EXPECT_EQ(t.state(), v1::TRIAL_QUEUED) << t.DebugString();
    }
  }
}

}  // namespace
}  // namespace bitsweep
