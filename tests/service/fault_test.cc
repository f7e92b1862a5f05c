// Faults on real processes. One Ristretto sweep of LeNet-5 while its coordinator is killed with
// SIGKILL 5 times (and restarted on the same port and database) and its workers 10 times. The
// sweep must end as an undisturbed run of the same sweep does: the same trials with the same
// results, each result stored once, the database intact.
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "client/explorer_client.h"
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

// What a trial is and what it measured: (stage, config) -> (top1, size_bits, energy).
using Outcomes = std::map<std::pair<std::string, std::string>, std::tuple<double, int64_t, double>>;

class Cluster {
 public:
  Cluster(fs::path dir, int workers) : dir_(std::move(dir)), workers_(workers) {
    fs::create_directories(dir_);
  }

  // (Re)starts the coordinator: on a free port the first time, on the same port afterwards.
  void StartCoordinator() {
    coordinator_ = std::make_unique<Process>(
        BITSWEEP_COORDINATOR,
        std::vector<std::string>{"--listen=127.0.0.1:" + (port_.empty() ? "0" : port_),
                                 "--db=" + db(), "--lease_seconds=3", "--heartbeat_seconds=1"},
        (dir_ / ("coordinator-" + std::to_string(starts_++) + ".log")).string());
    std::optional<std::string> line = coordinator_->WaitForLine("listening on port ", seconds(30));
    ASSERT_TRUE(line.has_value()) << coordinator_->Log();
    port_ = line->substr(0, line->find(','));
    if (client_ == nullptr) {
      client_ = *cli::ExplorerClient::Connect("127.0.0.1:" + port_, {});
    }
  }

  void StartWorker(int i) {
    workers_[i] = std::make_unique<Process>(
        BITSWEEP_WORKER,
        std::vector<std::string>{"--coordinator=127.0.0.1:" + port_, "--threads=1",
                                 "--name=w" + std::to_string(i), "--lease_wait_ms=1000",
                                 "--cache_dir=" + (dir_ / ("cache-" + std::to_string(i))).string()},
        (dir_ / ("worker-" + std::to_string(i) + "-" + std::to_string(starts_++) + ".log"))
            .string());
  }

  void StartAll() {
    StartCoordinator();
    for (size_t i = 0; i < workers_.size(); ++i) StartWorker(static_cast<int>(i));
  }

  int64_t Submit() {
    absl::StatusOr<std::string> hash = client_->UploadModelFile(BITSWEEP_LENET5_MODEL);
    EXPECT_TRUE(hash.ok()) << hash.status();
    absl::StatusOr<v1::Sweep> sweep = client_->Submit(
        testing::LenetSweepSpec("faults", "ristretto", hash.value_or(""), kData, 10000));
    EXPECT_TRUE(sweep.ok()) << sweep.status();
    return sweep.ok() ? sweep->id() : 0;
  }

  // Polls until the sweep is final, tolerating a coordinator that is down; `on_poll` runs
  // between polls (here: the killing).
  v1::Sweep WaitUntilFinal(int64_t id, seconds timeout, const std::function<void()>& on_poll) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    v1::Sweep sweep;
    while (std::chrono::steady_clock::now() < end) {
      absl::StatusOr<v1::Sweep> s = client_->GetSweep(id);
      if (s.ok()) {
        sweep = *s;
        if (sweep.state() == v1::SWEEP_SUCCEEDED || sweep.state() == v1::SWEEP_FAILED ||
            sweep.state() == v1::SWEEP_CANCELLED) {
          break;
        }
      }
      if (on_poll) on_poll();
      std::this_thread::sleep_for(milliseconds(200));
    }
    return sweep;
  }

  Outcomes Results(int64_t id) {
    v1::ListTrialsRequest request;
    request.set_sweep_id(id);
    request.set_page_size(1000);
    absl::StatusOr<v1::ListTrialsResponse> listed = client_->ListTrials(request);
    EXPECT_TRUE(listed.ok()) << listed.status();
    Outcomes outcomes;
    if (!listed.ok()) return outcomes;
    for (const v1::Trial& t : listed->trials()) {
      EXPECT_EQ(t.state(), v1::TRIAL_SUCCEEDED) << t.DebugString();
      outcomes[{t.spec().stage(), t.spec().config_json()}] = {t.result().top1(),
                                                              t.result().size_bits(),
                                                              t.result().energy_pj()};
    }
    return outcomes;
  }

  std::string db() const { return (dir_ / "results.db").string(); }
  Process& coordinator() { return *coordinator_; }
  Process& worker(int i) { return *workers_[i]; }
  std::string Logs() const {
    std::string all;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      if (entry.path().extension() == ".log") {
        std::ifstream in(entry.path());
        std::stringstream text;
        text << in.rdbuf();
        const std::string log = text.str();
        all += "--- " + entry.path().filename().string() + "\n" +
               log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
      }
    }
    return all;
  }

 private:
  fs::path dir_;
  std::string port_;
  int starts_ = 0;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::unique_ptr<cli::ExplorerClient> client_;
};

TEST(FaultTest, CoordinatorAndWorkerKillsChangeNoResult) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_faults_" + std::to_string(::getpid()));
  fs::remove_all(dir);

  // The undisturbed run.
  Cluster calm(dir / "calm", 2);
  ASSERT_NO_FATAL_FAILURE(calm.StartAll());
  const int64_t calm_id = calm.Submit();
  const auto calm_start = std::chrono::steady_clock::now();
  const v1::Sweep calm_sweep = calm.WaitUntilFinal(calm_id, seconds(300), {});
  const auto calm_time = std::chrono::steady_clock::now() - calm_start;
  std::printf("[faults] undisturbed sweep: %.1f s\n",
              std::chrono::duration<double>(calm_time).count());
  ASSERT_EQ(calm_sweep.state(), v1::SWEEP_SUCCEEDED) << calm_sweep.DebugString() << calm.Logs();
  const Outcomes expected = calm.Results(calm_id);
  ASSERT_GE(expected.size(), 5u);

  // The same sweep, killed while it runs: a worker every ~0.5 s (10 times), the coordinator
  // after every second worker (5 times), each restarted at once. On a fast machine the kills
  // come closer, so that all ten land within half of the undisturbed run's time.
  const auto kill_every = std::min<std::chrono::steady_clock::duration>(milliseconds(500),
                                                                        calm_time / 20);
  Cluster stormy(dir / "stormy", 2);
  ASSERT_NO_FATAL_FAILURE(stormy.StartAll());
  const int64_t id = stormy.Submit();
  int worker_kills = 0, coordinator_kills = 0;
  auto last_kill = std::chrono::steady_clock::now();
  const v1::Sweep sweep = stormy.WaitUntilFinal(id, seconds(600), [&] {
    if (worker_kills >= 10 || std::chrono::steady_clock::now() - last_kill < kill_every) {
      return;
    }
    last_kill = std::chrono::steady_clock::now();
    const int victim = worker_kills % 2;
    stormy.worker(victim).Kill(SIGKILL);
    ++worker_kills;
    if (worker_kills % 2 == 0 && coordinator_kills < 5) {
      stormy.coordinator().Kill(SIGKILL);
      ++coordinator_kills;
      stormy.StartCoordinator();
    }
    stormy.StartWorker(victim);
  });
  ASSERT_EQ(sweep.state(), v1::SWEEP_SUCCEEDED) << sweep.DebugString() << stormy.Logs();
  std::printf("[faults] %d worker and %d coordinator SIGKILLs during the sweep\n", worker_kills,
              coordinator_kills);
  EXPECT_EQ(worker_kills, 10);
  EXPECT_EQ(coordinator_kills, 5);

  const Outcomes got = stormy.Results(id);
  EXPECT_EQ(got, expected);
  // Each evaluated trial's result stored once; the database intact.
  EXPECT_EQ(testing::QueryIds(stormy.db(), "SELECT COUNT(*) FROM results"),
            testing::QueryIds(stormy.db(), "SELECT COUNT(DISTINCT trial_id) FROM results"));
  EXPECT_EQ(testing::QueryIds(stormy.db(),
                              "SELECT COUNT(*) FROM trials WHERE state = 'succeeded' AND "
                              "cached_from IS NULL AND id NOT IN (SELECT trial_id FROM results)"),
            std::vector<int64_t>{0});
  EXPECT_EQ(testing::QueryIds(stormy.db(), "SELECT COUNT(*) FROM pragma_integrity_check "
                                           "WHERE integrity_check != 'ok'"),
            std::vector<int64_t>{0});
}

// Disk full: the coordinator's database lives on an 8 MiB tmpfs mounted in a private mount
// namespace (unshare -m: nothing outside sees it). Mid-sweep the tmpfs is filled; calls that
// must write answer UNAVAILABLE (retryable, nothing half-stored) and the coordinator keeps
// serving reads; once space is freed the sweep completes with every trial and result, and the
// database passes PRAGMA integrity_check. Needs root (mount); skipped, saying so, otherwise.
TEST(FaultTest, DiskFullIsSurvivedWithoutLoss) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for mount -t tmpfs in a mount namespace";
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_diskfull_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const fs::path tmpfs = dir / "tmpfs", control = dir / "control";
  fs::create_directories(tmpfs);
  fs::create_directories(control);
  auto wait_for = [&](const std::string& name) {
    const auto end = std::chrono::steady_clock::now() + seconds(60);
    while (!fs::exists(control / name) && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(milliseconds(20));
    }
    return fs::exists(control / name);
  };
  const std::string t = tmpfs.string(), c = control.string();
  const std::string script =
      "set -e; mount -t tmpfs -o size=8m tmpfs '" + t + "'; "
      "'" BITSWEEP_COORDINATOR "' --listen 127.0.0.1:0 --db '" + t + "/r.db' "
      "--lease_seconds=3 --heartbeat_seconds=1 & C=$!; "
      "until [ -e '" + c + "/fill' ]; do sleep 0.05; done; "
      "dd if=/dev/zero of='" + t + "/filler' bs=64k 2>/dev/null || true; touch '" + c + "/filled'; "
      "until [ -e '" + c + "/free' ]; do sleep 0.05; done; "
      "rm -f '" + t + "/filler'; touch '" + c + "/freed'; "
      "until [ -e '" + c + "/stop' ]; do sleep 0.05; done; "
      "kill -TERM $C; wait $C || true; cp '" + t + "/r.db' '" + c + "/r.db'; touch '" + c + "/done'";
  Process namespace_shell("/usr/bin/unshare",
                          {"--mount", "--propagation", "private", "/bin/sh", "-c", script},
                          (dir / "coordinator.log").string());
  std::optional<std::string> line =
      namespace_shell.WaitForLine("listening on port ", seconds(30));
  if (!line.has_value()) {
    const std::string log = namespace_shell.Log();
    if (log.find("mount") != std::string::npos || log.find("unshare") != std::string::npos) {
      GTEST_SKIP() << "no private tmpfs here: " << log;
    }
    FAIL() << log;
  }
  const std::string address = "127.0.0.1:" + line->substr(0, line->find(','));
  std::unique_ptr<cli::ExplorerClient> client = *cli::ExplorerClient::Connect(address, {});
  Process worker(BITSWEEP_WORKER,
                 {"--coordinator=" + address, "--threads=1", "--lease_wait_ms=1000",
                  "--cache_dir=" + (dir / "cache").string()},
                 (dir / "worker.log").string());

  absl::StatusOr<std::string> hash = client->UploadModelFile(BITSWEEP_LENET5_MODEL);
  ASSERT_TRUE(hash.ok()) << hash.status();
  v1::SweepSpec spec = testing::LenetSweepSpec("diskfull", "grid", *hash, kData, 300);
  v1::GridAxis* axis = spec.mutable_space()->add_axes();
  axis->set_selector("default");
  axis->set_role("weights");
  for (const char* f : {"fixed:8", "fixed:7", "fixed:6", "fixed:5", "fixed:4", "fixed:3"}) {
    axis->add_formats(f);
  }
  absl::StatusOr<v1::Sweep> sweep = client->Submit(spec);
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  // Fill the disk once the first results are in.
  for (int i = 0; i < 600; ++i) {
    absl::StatusOr<v1::Sweep> now = client->GetSweep(sweep->id());
    if (now.ok() && now->trials_succeeded() >= 2) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  std::ofstream(control / "fill").put('\n');
  ASSERT_TRUE(wait_for("filled")) << namespace_shell.Log();
  // Writes now fail retryably and say why (an upload's file cannot be written; SQLite answers
  // "database or disk is full" unless its WAL still has room); reads still work.
  absl::StatusOr<std::string> upload = client->UploadModelFile(BITSWEEP_LENET5_MODEL);
  EXPECT_EQ(upload.status().code(), absl::StatusCode::kUnavailable) << upload.status();
  EXPECT_NE(upload.status().message().find("No space left on device"), absl::string_view::npos)
      << upload.status();
  v1::SweepSpec another = spec;
  another.set_name("while-full");
  absl::StatusOr<v1::Sweep> submitted = client->Submit(another);
  EXPECT_TRUE(submitted.ok() || absl::IsUnavailable(submitted.status())) << submitted.status();
  EXPECT_TRUE(client->GetSweep(sweep->id()).ok());
  std::this_thread::sleep_for(seconds(3));  // the worker's reports meet the full disk too
  std::ofstream(control / "free").put('\n');
  ASSERT_TRUE(wait_for("freed")) << namespace_shell.Log();

  const v1::Sweep done = testing::WaitUntilFinal(*client, sweep->id(), seconds(300));
  EXPECT_EQ(done.state(), v1::SWEEP_SUCCEEDED) << done.DebugString() << namespace_shell.Log()
                                               << worker.Log();
  EXPECT_EQ(done.trials_succeeded(), 7);  // baseline + 6 grid points
  std::ofstream(control / "stop").put('\n');
  ASSERT_TRUE(wait_for("done")) << namespace_shell.Log();
  const std::string db = (control / "r.db").string();
  EXPECT_EQ(testing::QueryIds(db, "SELECT COUNT(*) FROM results"), std::vector<int64_t>{7});
  EXPECT_EQ(testing::QueryIds(db, "SELECT COUNT(DISTINCT trial_id) FROM results"),
            std::vector<int64_t>{7});
  EXPECT_EQ(testing::QueryIds(db, "SELECT COUNT(*) FROM pragma_integrity_check "
                                  "WHERE integrity_check != 'ok'"),
            std::vector<int64_t>{0});
}

}  // namespace
}  // namespace bitsweep
