// The Docker Compose cluster of deploy/docker-compose.yml on a real Docker engine: Debian's
// dockerd, started by this test on its own socket, exec root and pid file, with a persistent data
// root (/var/cache/bitsweep-test/docker unless BITSWEEP_DOCKER_ROOT says otherwise) so that later
// runs on the machine reuse the base image, the layers and the ccache mount; stopped by its pid.
// No image registry is needed: debian:bookworm-slim is made with mmdebstrap + docker import when
// missing, and prom/prometheus is a stand-in built from Debian's prometheus package.
//
// It builds the image (deploy/docker/Dockerfile), starts coordinator, 2 workers and Prometheus,
// waits for the coordinator's HEALTHCHECK, submits a Ristretto sweep of LeNet-5 from the host
// through the published port with the bearer token of the Compose secret, kills one worker
// container mid-sweep, and checks that the sweep completes, that its frontier equals the one
// recomputed from the coordinator's SQLite file, that Prometheus has every target up and that
// every dashboard query returns data; then `docker-compose down -v`. A second test deploys the
// same file as a Swarm stack (`docker swarm init --advertise-addr 127.0.0.1`, with
// deploy/docker-stack.yml) and runs a sweep on it. Both skip, saying why, only when dockerd cannot
// start here.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/explorer_client.h"
#include "gtest/gtest.h"
#include "tests/ops/ops_util.h"
#include "tests/service/frontier_sql.h"
#include "tests/service/process.h"
#include "tests/service/sweep_util.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::CommandResult;
using testing::FreePort;
using testing::PrometheusApi;
using testing::Process;
using testing::RunShell;

const fs::path kSource = BITSWEEP_SOURCE_DIR;
const std::string kDatasets = "/usr/share/datasets";

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Seconds since `start`, for the timing lines the test prints.
double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Short paths: containerd's sockets live under the exec root.
    run_dir_ = fs::path("/tmp") / ("bsw-ct-" + std::to_string(::getpid()));
    fs::remove_all(run_dir_);
    fs::create_directories(run_dir_);
    const char* root = std::getenv("BITSWEEP_DOCKER_ROOT");
    data_root_ = root != nullptr && root[0] != '\0' ? root : "/var/cache/bitsweep-test/docker";
    fs::create_directories(data_root_);
    socket_ = (run_dir_ / "docker.sock").string();
    dockerd_ = std::make_unique<Process>(
        "/usr/sbin/dockerd",
        std::vector<std::string>{
            "--data-root=" + data_root_, "--exec-root=" + (run_dir_ / "exec").string(),
            "--pidfile=" + (run_dir_ / "dockerd.pid").string(), "--host=unix://" + socket_,
            // Addresses of our own: no clash with other Docker engines on the machine.
            "--bip=10.213.255.1/24", "--default-address-pool=base=10.213.0.0/16,size=24"},
        (run_dir_ / "dockerd.log").string());
    const auto end = std::chrono::steady_clock::now() + seconds(60);
    while (std::chrono::steady_clock::now() < end && dockerd_->Running()) {
      if (Docker("info --format '{{.ServerVersion}}'").status == 0) {
        started_ = true;
        return;
      }
      std::this_thread::sleep_for(milliseconds(500));
    }
    skip_reason_ = "dockerd could not start here: " + LastLines(dockerd_->Log(), 5);
  }

  void TearDown() override {
    if (!stack_.empty()) {
      Docker("stack rm " + stack_);
      Docker("swarm leave --force");  // the swarm state lives in the persistent data root
    }
    if (!project_.empty() && stack_.empty()) Compose("down -v --remove-orphans --timeout 5");
    if (dockerd_ != nullptr) dockerd_->Kill(SIGTERM);  // waits; dockerd stops its containerd
    // Swarm's network namespaces may stay mounted under the exec root: unmount, then remove.
    RunShell("for m in $(grep -o '" + run_dir_.string() + "/[^ ]*' /proc/mounts | sort -r); do "
             "umount -l \"$m\"; done");
    std::error_code ignored;
    fs::remove_all(run_dir_, ignored);
  }

  static std::string LastLines(const std::string& text, int n) {
    std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
    if (static_cast<int>(lines.size()) > n) lines.erase(lines.begin(), lines.end() - n);
    return absl::StrJoin(lines, "\n");
  }

  std::string Env() const { return "DOCKER_HOST=unix://" + socket_ + " "; }
  CommandResult Docker(const std::string& args) const {
    return RunShell(Env() + "/usr/bin/docker " + args);
  }
  CommandResult Compose(const std::string& args) const {
    return RunShell(Env() + compose_env_ + "/usr/bin/docker-compose -p " + project_ + " -f " +
                    (kSource / "deploy/docker-compose.yml").string() + " " + args);
  }

  // debian:bookworm-slim without a registry: mmdebstrap's minbase bookworm, imported (~1 min
  // once per data root).
  void EnsureBaseImage() {
    if (Docker("image inspect debian:bookworm-slim >/dev/null").status == 0) return;
    const std::string tar = (run_dir_ / "rootfs.tar").string();
    CommandResult made = RunShell("mmdebstrap --variant=minbase bookworm " + tar);
    ASSERT_EQ(made.status, 0) << LastLines(made.output, 20);
    CommandResult imported = Docker("import " + tar + " debian:bookworm-slim");
    ASSERT_EQ(imported.status, 0) << imported.output;
    fs::remove(tar);
  }

  // The stand-in Prometheus, then bitsweep (BuildKit: ccache cache mount), and checks of the
  // runtime image.
  void BuildImages() {
    CommandResult prom_image = Docker("build -q -t prom/prometheus:v2.42.0 -f " +
                                      (kSource / "tests/ops/prometheus-standin.Dockerfile").string() +
                                      " " + (kSource / "tests/ops").string());
    ASSERT_EQ(prom_image.status, 0) << LastLines(prom_image.output, 30);
    const auto build_start = std::chrono::steady_clock::now();
    CommandResult build = RunShell(Env() + "DOCKER_BUILDKIT=1 /usr/bin/docker build "
                                   "--progress=plain -f " +
                                   (kSource / "deploy/docker/Dockerfile").string() +
                                   " -t bitsweep:test " + kSource.string());
    ASSERT_EQ(build.status, 0) << LastLines(build.output, 60);
    std::printf("[cluster] bitsweep image built in %.0f s\n", Since(build_start));
    for (const char* image : {"bitsweep:test", "prom/prometheus:v2.42.0", "debian:bookworm-slim"}) {
      CommandResult size = Docker(absl::StrCat("image inspect -f '{{.Size}}' ", image));
      std::printf("[cluster] image %s: %s", image, size.output.c_str());
    }
    // The runtime image holds no compiler and runs as the unprivileged user.
    CommandResult user = Docker("run --rm --entrypoint id bitsweep:test -un");
    EXPECT_EQ(user.output, "bitsweep\n");
    EXPECT_NE(
        Docker("run --rm --entrypoint sh bitsweep:test -c 'command -v c++ g++ cmake'").status, 0);
  }

  // The deployment's settings (ports picked free, a fresh token file) as VAR=value prefixes.
  void Configure(const std::string& project) {
    token_ = "ct-" + std::to_string(::getpid()) + "-secret";
    const fs::path token_file = run_dir_ / "bitsweep-token";
    std::ofstream(token_file) << token_ << "\n";
    chmod(token_file.c_str(), 0644);  // the secret is bind-mounted; the container user reads it
    port_ = FreePort();
    prometheus_port_ = FreePort();
    project_ = project;
    compose_env_ = absl::StrCat(
        "BITSWEEP_IMAGE=bitsweep:test BITSWEEP_TOKEN_FILE=", token_file.string(),
        " BITSWEEP_PORT=", port_, " BITSWEEP_PROMETHEUS_PORT=", prometheus_port_,
        " BITSWEEP_GRAFANA_PORT=", FreePort(),
        " BITSWEEP_LEASE_SECONDS=5 BITSWEEP_HEARTBEAT_SECONDS=1 BITSWEEP_DATASETS=", kDatasets,
        " ");
  }

  // A client of the published coordinator port, once `bitsweep health` answers through it.
  std::unique_ptr<cli::ExplorerClient> Connect() {
    const std::string address = absl::StrCat("127.0.0.1:", port_);
    CommandResult health;
    for (int i = 0; i < 60; ++i) {
      health = RunShell(std::string(BITSWEEP_BINARY) + " health --timeout-seconds 2 --server " +
                        address);
      if (health.status == 0) break;
      std::this_thread::sleep_for(seconds(1));
    }
    EXPECT_EQ(health.status, 0) << health.output;
    if (health.status != 0) return nullptr;  // the caller prints the services' state and logs
    cli::ConnectOptions options;
    options.token = token_;
    absl::StatusOr<std::unique_ptr<cli::ExplorerClient>> client =
        cli::ExplorerClient::Connect(address, options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // Ristretto on LeNet-5 over the datasets the workers mount (same path as on the host).
  static v1::SweepSpec LenetSpec(const std::string& hash, int64_t eval_limit) {
    v1::SweepSpec spec = testing::LenetSweepSpec("cluster", "ristretto", hash,
                                                 "idx:" + kDatasets + "/fashion-mnist", eval_limit);
    spec.mutable_finetune()->set_steps(100);
    return spec;
  }

  // Polls Prometheus until it has `expected` active targets, all up (or the timeout passes).
  static bool AllTargetsUp(const PrometheusApi& prometheus, int expected, seconds timeout,
                           std::string* state) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      absl::StatusOr<nlohmann::json> targets = prometheus.Api("/api/v1/targets", {});
      if (targets.ok()) {
        int up_count = 0, total = 0;
        std::set<std::string> jobs;
        state->clear();
        for (const nlohmann::json& t : (*targets)["data"]["activeTargets"]) {
          ++total;
          jobs.insert(t["labels"]["job"].get<std::string>());
          up_count += t["health"] == "up";
          *state += t["scrapeUrl"].get<std::string>() + " " + t["health"].get<std::string>() + "; ";
        }
        if (total == expected && up_count == expected && jobs.count("coordinator") &&
            jobs.count("worker")) {
          return true;
        }
      }
      std::this_thread::sleep_for(seconds(1));
    }
    return false;
  }

  std::string ContainerOf(const std::string& service, int index) const {
    return absl::StrCat(project_, "_", service, "_", index);
  }

  std::unique_ptr<Process> dockerd_;
  fs::path run_dir_;
  std::string data_root_, socket_, skip_reason_;
  bool started_ = false;
  std::string project_;      // the Compose project, once up
  std::string compose_env_;  // its settings, as VAR=value prefixes
  std::string token_;
  int port_ = 0, prometheus_port_ = 0;
  std::string stack_;  // the Swarm stack, once deployed
};

TEST_F(ClusterTest, ComposeClusterRunsASweepSurvivesAWorkerKillAndIsMonitored) {
  if (!started_) GTEST_SKIP() << skip_reason_;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(EnsureBaseImage());
  std::printf("[cluster] base image ready after %.0f s\n", Since(t0));

  ASSERT_NO_FATAL_FAILURE(BuildImages());

  // The cluster: coordinator, two workers, Prometheus (Grafana needs a registry image).
  Configure("bsw" + std::to_string(::getpid()));
  const std::string up = "up -d --no-build --scale worker=2 coordinator worker prometheus";
  CommandResult started = Compose(up);
  ASSERT_EQ(started.status, 0) << started.output;
  const double start = UnixNow();

  // The coordinator's HEALTHCHECK (`bitsweep health` inside the container) turns healthy.
  std::string health;
  for (int i = 0; i < 60 && health != "healthy\n"; ++i) {
    health = Docker("inspect -f '{{.State.Health.Status}}' " + ContainerOf("coordinator", 1)).output;
    if (health != "healthy\n") std::this_thread::sleep_for(seconds(1));
  }
  ASSERT_EQ(health, "healthy\n") << Compose("logs --tail 30").output;

  // A sweep from the host client, through the published port, with the secret's token.
  std::unique_ptr<cli::ExplorerClient> client = Connect();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::string> hash = client->UploadModelFile(BITSWEEP_LENET5_MODEL);
  ASSERT_TRUE(hash.ok()) << hash.status();
  // A call that fails (an unknown sweep): the gRPC error panels have something to show, once
  // Prometheus holds a sample from before it.
  EXPECT_TRUE(PrometheusApi(prometheus_port_).WaitScraped(3, 2, seconds(30)));
  EXPECT_EQ(client->GetSweep(987654).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<v1::Sweep> submitted = client->Submit(LenetSpec(*hash, 10000));
  ASSERT_TRUE(submitted.ok()) << submitted.status();

  // Worker 2's container is killed once a few trials are done; the sweep completes anyway.
  bool killed = false;
  const v1::Sweep sweep = testing::WaitUntilFinal(
      *client, submitted->id(), seconds(240), [&](const v1::Sweep& s) {
        if (!killed && s.trials_succeeded() >= 4) {
          CommandResult kill = Docker("kill " + ContainerOf("worker", 2));
          EXPECT_EQ(kill.status, 0) << kill.output;
          killed = true;
        }
      });
  ASSERT_EQ(sweep.state(), v1::SWEEP_SUCCEEDED)
      << sweep.DebugString() << LastLines(Compose("logs --tail 40").output, 80);
  EXPECT_TRUE(killed) << "the sweep ended before a worker could be killed mid-sweep";
  std::printf("[cluster] sweep %lld: %lld trials in %.0f s\n",
              static_cast<long long>(sweep.id()), static_cast<long long>(sweep.trials_total()),
              UnixNow() - start);

  v1::GetFrontierRequest request;
  request.set_sweep_id(sweep.id());
  request.add_objectives(v1::OBJECTIVE_TOP1);
  request.add_objectives(v1::OBJECTIVE_SIZE);
  absl::StatusOr<v1::Frontier> frontier = client->GetFrontier(request);
  ASSERT_TRUE(frontier.ok()) << frontier.status();
  std::vector<int64_t> served;
  for (const v1::FrontierPoint& p : frontier->points()) served.push_back(p.trial_id());
  std::sort(served.begin(), served.end());
  EXPECT_GE(served.size(), 2u);

  // The operator's answer to a dead worker: scale back up. Then every target is up.
  CommandResult restored = Compose(up);
  ASSERT_EQ(restored.status, 0) << restored.output;
  PrometheusApi prometheus(prometheus_port_);
  std::string targets_state;
  const bool all_up = AllTargetsUp(prometheus, 4, seconds(90), &targets_state);
  EXPECT_TRUE(all_up) << targets_state;

  // Every dashboard query returns data (5 s scrapes: 30 s rate windows), once Prometheus holds a
  // few samples of the sweep's series (a loaded machine may delay scrapes).
  EXPECT_TRUE(prometheus.WaitFor(
      "count_over_time(bitsweep_sweep_trials{state=\"succeeded\"}[10m]) >= 6", 1, seconds(60)));
  int checked = 0;
  const std::vector<std::string> gaps = prometheus.DashboardGaps(
      kSource / "deploy/grafana/dashboards", "30s", start, UnixNow(), &checked);
  EXPECT_GE(checked, 30);
  if (!gaps.empty()) {  // what Prometheus holds, to tell missing scrapes from missing series
    for (const char* expr : {"count_over_time(up[10m])", "count_over_time(bitsweep_sweep_info[10m])",
                             "count_over_time(bitsweep_sweep_trials{state=\"succeeded\"}[10m])"}) {
      absl::StatusOr<nlohmann::json> answer = prometheus.Api("/api/v1/query", {{"query", expr}});
      std::printf("[cluster] %s: %s\n", expr,
                  answer.ok() ? (*answer)["data"]["result"].dump().c_str() : "error");
    }
  }
  EXPECT_TRUE(gaps.empty()) << absl::StrJoin(gaps, "\n");

  // The frontier recomputed from the database file the coordinator wrote in its volume (stopped
  // first, so that SQLite folds its WAL into the file).
  CommandResult stopped = Compose("stop coordinator");
  ASSERT_EQ(stopped.status, 0) << stopped.output;
  // The whole folder: the database with its WAL, if the coordinator left one.
  CommandResult copied = Docker("cp " + ContainerOf("coordinator", 1) + ":/var/lib/bitsweep " +
                                (run_dir_ / "volume").string());
  ASSERT_EQ(copied.status, 0) << copied.output;
  const fs::path db = run_dir_ / "volume" / "results.db";
  ASSERT_TRUE(fs::exists(db)) << RunShell("ls -la " + (run_dir_ / "volume").string()).output;
  EXPECT_EQ(served, testing::QueryIds(db.string(), testing::FrontierSql(sweep.id())));
  EXPECT_EQ(testing::QueryIds(db.string(),
                              "SELECT COUNT(*) FROM results GROUP BY trial_id HAVING COUNT(*) > 1"),
            std::vector<int64_t>{});

  CommandResult down = Compose("down -v --timeout 5");
  EXPECT_EQ(down.status, 0) << down.output;
  EXPECT_EQ(Docker("volume ls -q --filter name=" + project_).output, "");
  project_.clear();
  std::printf("[cluster] whole test %.0f s\n", Since(t0));
}

// The same Compose file as a Swarm stack on a single-node swarm (with deploy/docker-stack.yml's
// overrides): the stack runs a sweep from the host client and Prometheus finds every replica.
TEST_F(ClusterTest, SwarmStackOfTheSameComposeFileRunsASweep) {
  if (!started_) GTEST_SKIP() << skip_reason_;
  ASSERT_NO_FATAL_FAILURE(EnsureBaseImage());
  ASSERT_NO_FATAL_FAILURE(BuildImages());
  Docker("swarm leave --force");  // a swarm left behind by an interrupted run
  // Overlay VXLAN links an earlier swarm left in the host's namespace make every task fail
  // ("error creating vxlan interface: file exists"); only our test dockerds make them here.
  RunShell("for link in $(ip -o link show | sed -n 's/^[0-9]*: \\(vx-[0-9a-z-]*\\).*/\\1/p'); "
           "do ip link delete \"$link\"; done");
  CommandResult init = Docker("swarm init --advertise-addr 127.0.0.1 "
                              "--default-addr-pool 10.214.0.0/16 --default-addr-pool-mask-length 24");
  ASSERT_EQ(init.status, 0) << init.output;
  Configure("bsws" + std::to_string(::getpid()));
  stack_ = project_;
  CommandResult deployed = RunShell(
      Env() + compose_env_ + "BITSWEEP_GRAFANA_REPLICAS=0 /usr/bin/docker stack deploy "
      "--resolve-image never -c " + (kSource / "deploy/docker-compose.yml").string() + " -c " +
      (kSource / "deploy/docker-stack.yml").string() + " " + stack_);
  ASSERT_EQ(deployed.status, 0) << deployed.output;
  const double start = UnixNow();
  std::unique_ptr<cli::ExplorerClient> client = Connect();
  ASSERT_NE(client, nullptr) << Docker("service ls").output
                             << Docker("service ps --no-trunc " + stack_ + "_coordinator").output
                             << Docker("service logs --tail 20 " + stack_ + "_coordinator").output;
  absl::StatusOr<std::string> hash = client->UploadModelFile(BITSWEEP_LENET5_MODEL);
  ASSERT_TRUE(hash.ok()) << hash.status();
  // Both replicas registered (a replica that started before the coordinator's DNS name existed
  // retries with backoff) before the sweep starts.
  EXPECT_TRUE(PrometheusApi(prometheus_port_).WaitFor("bitsweep_workers_connected >= 2", 1,
                                                      seconds(60)));
  absl::StatusOr<v1::Sweep> submitted = client->Submit(LenetSpec(*hash, 2000));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const v1::Sweep sweep = testing::WaitUntilFinal(*client, submitted->id(), seconds(180));
  ASSERT_EQ(sweep.state(), v1::SWEEP_SUCCEEDED)
      << sweep.DebugString() << Docker("service logs --tail 20 " + stack_ + "_worker").output;
  EXPECT_EQ(sweep.trials_failed(), 0);
  std::printf("[swarm] sweep %lld: %lld trials in %.0f s\n", static_cast<long long>(sweep.id()),
              static_cast<long long>(sweep.trials_total()), UnixNow() - start);
  // Both worker replicas evaluated trials, each found by Prometheus through DNS.
  std::set<std::string> workers;
  v1::ListTrialsRequest request;
  request.set_sweep_id(sweep.id());
  request.set_page_size(1000);
  absl::StatusOr<v1::ListTrialsResponse> trials = client->ListTrials(request);
  ASSERT_TRUE(trials.ok()) << trials.status();
  for (const v1::Trial& t : trials->trials()) {
    if (!t.cached()) workers.insert(t.result().worker_id());
  }
  EXPECT_EQ(workers.size(), 2u);
  std::string targets_state;
  EXPECT_TRUE(AllTargetsUp(PrometheusApi(prometheus_port_), 4, seconds(60), &targets_state))
      << targets_state;
}

}  // namespace
}  // namespace bitsweep
