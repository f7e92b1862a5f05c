// The metrics, dashboards and alert rules against real components: a bitsweep-coordinator and
// two bitsweep-worker processes on loopback run a Ristretto sweep of the committed LeNet-5 while
// Debian's Prometheus (its own port and storage, 1 s scrapes and rule evaluations) scrapes them.
// Every PromQL expression of every provisioned Grafana panel must return numbers over the run;
// every alert rule must evaluate without error, and the ones the scenario provokes (a worker
// killed, no workers while trials are queued, the coordinator killed) must fire their
// expressions. Each /metrics answer the test reads passes `promtool check metrics`; the deploy
// files pass `promtool check config`, `check rules` and `test rules`.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/explorer_client.h"
#include "gtest/gtest.h"
#include "tests/ops/ops_util.h"
#include "tests/service/process.h"
#include "tests/service/sweep_util.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::CommandResult;
using testing::FreePort;
using testing::HttpGet;
using testing::PrometheusServer;
using testing::Process;
using testing::RunShell;

const fs::path kDeploy = fs::path(BITSWEEP_SOURCE_DIR) / "deploy";
const std::string kData = std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

fs::path TestDir(const std::string& name) {
  fs::path dir = fs::path(::testing::TempDir()) / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// `promtool check metrics` on one scrape of 127.0.0.1:port/metrics; "" when it passes.
std::string CheckScrape(int port, const fs::path& dir) {
  absl::StatusOr<std::string> text = HttpGet(port, "/metrics");
  if (!text.ok()) return std::string(text.status().message());
  const fs::path file = dir / ("scrape-" + std::to_string(port) + ".txt");
  std::ofstream(file) << *text;
  CommandResult check = RunShell("promtool check metrics < " + file.string());
  if (check.status != 0) return absl::StrCat("port ", port, ": ", check.output);
  return "";
}

TEST(DeployFilesTest, PromtoolAcceptsConfigRulesAndRuleUnitTests) {
  const fs::path prom = kDeploy / "prometheus";
  CommandResult config = RunShell("promtool check config " + (prom / "prometheus.yml").string());
  EXPECT_EQ(config.status, 0) << config.output;
  CommandResult rules = RunShell("promtool check rules " + (prom / "alerts.yml").string());
  EXPECT_EQ(rules.status, 0) << rules.output;
  EXPECT_NE(rules.output.find("SUCCESS: 6 rules found"), std::string::npos) << rules.output;
  CommandResult unit = RunShell("cd " + prom.string() + " && promtool test rules alerts_test.yml");
  EXPECT_EQ(unit.status, 0) << unit.output;
  EXPECT_NE(unit.output.find("SUCCESS"), std::string::npos) << unit.output;
  // Every panel queries the provisioned datasource (uid "prometheus").
  const std::string datasource =
      testing::ReadFile(kDeploy / "grafana/provisioning/datasources/prometheus.yml");
  EXPECT_NE(datasource.find("uid: prometheus"), std::string::npos);
  int panels = 0;
  for (const auto& entry : fs::directory_iterator(kDeploy / "grafana/dashboards")) {
    const nlohmann::json dashboard = nlohmann::json::parse(testing::ReadFile(entry.path()));
    for (const nlohmann::json& panel : dashboard["panels"]) {
      ++panels;
      EXPECT_EQ(panel["datasource"]["uid"], "prometheus") << panel["title"];
      EXPECT_FALSE(panel["targets"].empty()) << panel["title"];
    }
  }
  EXPECT_GE(panels, 23);
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = TestDir("bitsweep_metrics"); }

  std::unique_ptr<Process> StartWorker(const std::string& name, int metrics_port) {
    return std::make_unique<Process>(
        BITSWEEP_WORKER,
        std::vector<std::string>{"--coordinator=" + address_, "--threads=1", "--name=" + name,
                                 "--cache_dir=" + (dir_ / ("cache-" + name)).string(),
                                 "--metrics-port=" + std::to_string(metrics_port)},
        (dir_ / (name + ".log")).string());
  }

  static v1::SweepSpec LenetSpec(const std::string& hash, int64_t eval_limit) {
    v1::SweepSpec spec = testing::LenetSweepSpec("metrics", "ristretto", hash, kData, eval_limit);
    spec.mutable_finetune()->set_steps(100);
    return spec;
  }

  fs::path dir_;
  std::string address_;
};

TEST_F(MetricsTest, EveryDashboardQueryAndAlertRuleWorksOnARealPrometheus) {
  const int coordinator_metrics = FreePort(), w1_metrics = FreePort(), w2_metrics = FreePort();
  auto coordinator = std::make_unique<Process>(
      BITSWEEP_COORDINATOR,
      std::vector<std::string>{"--listen=127.0.0.1:0", "--db=" + (dir_ / "results.db").string(),
                               "--lease_seconds=3", "--heartbeat_seconds=1",
                               "--metrics-port=" + std::to_string(coordinator_metrics)},
      (dir_ / "coordinator.log").string());
  std::optional<std::string> port = coordinator->WaitForLine("listening on port ", seconds(30));
  ASSERT_TRUE(port.has_value()) << coordinator->Log();
  address_ = "127.0.0.1:" + port->substr(0, port->find(','));
  auto w1 = StartWorker("w1", w1_metrics);
  auto w2 = StartWorker("w2", w2_metrics);

  const double start = UnixNow();
  const std::string config = absl::StrCat(
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "rule_files:\n  - ", (kDeploy / "prometheus/alerts.yml").string(), "\n"
      "scrape_configs:\n"
      "  - job_name: coordinator\n    static_configs:\n      - targets: ['127.0.0.1:",
      coordinator_metrics, "']\n"
      "  - job_name: worker\n    static_configs:\n      - targets: ['127.0.0.1:", w1_metrics,
      "', '127.0.0.1:", w2_metrics, "']\n");
  PrometheusServer prometheus(dir_ / "prometheus", config);
  ASSERT_TRUE(prometheus.WaitReady(seconds(30))) << prometheus.Log();

  absl::StatusOr<std::unique_ptr<cli::ExplorerClient>> client =
      cli::ExplorerClient::Connect(address_, {});
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::string> hash = (*client)->UploadModelFile(BITSWEEP_LENET5_MODEL);
  ASSERT_TRUE(hash.ok()) << hash.status();

  // Every target scraped twice by Prometheus (and once checked by promtool) before the sweep
  // starts, so that counters have a starting point for rate().
  for (int p : {coordinator_metrics, w1_metrics, w2_metrics}) {
    EXPECT_EQ(CheckScrape(p, dir_), "");
  }
  ASSERT_TRUE(prometheus.WaitScraped(3, 2, seconds(30))) << prometheus.Log();
  absl::StatusOr<v1::Sweep> submitted = (*client)->Submit(LenetSpec(*hash, 10000));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  // A call that fails (an unknown sweep): the gRPC error panels have something to show.
  EXPECT_EQ((*client)->GetSweep(987654).status().code(), absl::StatusCode::kNotFound);

  // Worker 2 is killed once a few trials finished: its lease expires, its target goes down.
  // Each poll also checks the scrapes of the live targets.
  int scrapes = 0;
  const v1::Sweep sweep = testing::WaitUntilFinal(
      **client, submitted->id(), seconds(120), [&](const v1::Sweep& s) {
        if (w2 != nullptr && s.trials_succeeded() >= 4) {
          w2->Kill(SIGKILL);
          w2.reset();
        }
        if (scrapes % 7 == 0) {  // about every 0.7 s
          for (int p : {coordinator_metrics, w1_metrics}) EXPECT_EQ(CheckScrape(p, dir_), "");
        }
        ++scrapes;
      });
  ASSERT_EQ(sweep.state(), v1::SWEEP_SUCCEEDED) << sweep.DebugString() << coordinator->Log();
  EXPECT_EQ(w2, nullptr) << "the sweep ended before worker 2 could be killed mid-sweep";
  EXPECT_GE(scrapes, 40);
  std::this_thread::sleep_for(seconds(3));  // scrapes of the finished state
  EXPECT_EQ(CheckScrape(coordinator_metrics, dir_), "");

  // The dashboards: every expression returns numbers over the run.
  const double sweep_end = UnixNow();
  int checked = 0;
  const std::vector<std::string> empty =
      prometheus.DashboardGaps(kDeploy / "grafana/dashboards", "5s", start, sweep_end, &checked);
  EXPECT_GE(checked, 30);
  EXPECT_TRUE(empty.empty()) << absl::StrJoin(empty, "\n");

  // No workers while trials are queued: the last worker stops, a new sweep queues its baseline.
  w1->Kill(SIGTERM);
  absl::StatusOr<v1::Sweep> queued = (*client)->Submit(LenetSpec(*hash, 500));
  ASSERT_TRUE(queued.ok()) << queued.status();

  // The rules as Prometheus loaded them.
  absl::StatusOr<nlohmann::json> rules = prometheus.Api("/api/v1/rules", {});
  ASSERT_TRUE(rules.ok()) << rules.status();
  std::map<std::string, std::string> alert_exprs;
  for (const nlohmann::json& group : (*rules)["data"]["groups"]) {
    for (const nlohmann::json& rule : group["rules"]) {
      alert_exprs[rule["name"].get<std::string>()] = rule["query"].get<std::string>();
    }
  }
  ASSERT_EQ(alert_exprs.size(), 6u) << rules->dump();
  auto fires_within = [&](const std::string& alert, seconds timeout) {
    return prometheus.WaitFor(alert_exprs[alert], 1, timeout);
  };
  EXPECT_TRUE(fires_within("BitsweepNoWorkersWhileQueued", seconds(20)));
  EXPECT_TRUE(fires_within("BitsweepWorkerDown", seconds(5)));

  // Every rule evaluates without error, and every metric it reads has data.
  rules = prometheus.Api("/api/v1/rules", {});
  ASSERT_TRUE(rules.ok()) << rules.status();
  const std::regex metric_name(R"(\b(bitsweep_[a-z_]+|up)\b)");
  for (const nlohmann::json& group : (*rules)["data"]["groups"]) {
    for (const nlohmann::json& rule : group["rules"]) {
      EXPECT_EQ(rule["health"], "ok") << rule.dump();
      const std::string query = rule["query"].get<std::string>();
      for (std::sregex_iterator it(query.begin(), query.end(), metric_name), end; it != end;
           ++it) {
        absl::StatusOr<int> n = prometheus.InstantSeries(
            absl::StrCat("max_over_time(", it->str(), "[5m])"));
        EXPECT_TRUE(n.ok() && *n > 0) << rule["name"] << " reads " << it->str();
      }
    }
  }

  // The coordinator dies: its alert's expression fires at the next scrapes.
  coordinator->Kill(SIGKILL);
  EXPECT_TRUE(fires_within("BitsweepCoordinatorDown", seconds(10)));
}

// `bitsweep health` (the image's HEALTHCHECK): 0 and SERVING from a running coordinator; 1 and the
// address from a port nobody serves.
TEST(HealthCommandTest, ServingCoordinatorIsHealthyAndAbsentOneIsNot) {
  const fs::path dir = TestDir("bitsweep_health");
  Process coordinator(BITSWEEP_COORDINATOR,
                      {"--listen=127.0.0.1:0", "--db=" + (dir / "results.db").string(),
                       "--client_token=secret"},
                      (dir / "coordinator.log").string());
  std::optional<std::string> port = coordinator.WaitForLine("listening on port ", seconds(30));
  ASSERT_TRUE(port.has_value()) << coordinator.Log();
  const std::string address = "127.0.0.1:" + port->substr(0, port->find(','));
  // The health service needs no token, even when the Explorer does.
  CommandResult healthy = RunShell(std::string(BITSWEEP_BINARY) + " health --server " + address);
  EXPECT_EQ(healthy.status, 0) << healthy.output;
  EXPECT_EQ(healthy.output, address + ": SERVING\n");
  coordinator.Kill(SIGTERM);
  CommandResult down = RunShell(std::string(BITSWEEP_BINARY) + " health --server " + address +
                                " --timeout-seconds 1");
  EXPECT_EQ(down.status, 1) << down.output;
  EXPECT_NE(down.output.find("bitsweep health: " + address), std::string::npos) << down.output;
}

// `bitsweep local --metrics-port` serves the in-process coordinator's and workers' series.
TEST(LocalMetricsTest, LocalServesCoordinatorAndWorkerMetrics) {
  const fs::path dir = TestDir("bitsweep_local_metrics");
  const int metrics_port = FreePort();
  Process local(BITSWEEP_BINARY,
                {"local", "--model=" BITSWEEP_LENET5_MODEL, "--dataset=" + kData, "--mean=0.2860",
                 "--std=0.3530", "--strategy=ristretto", "--limit=10000", "--workers=2",
                 "--threads=2", "--db=" + (dir / "results.db").string(),
                 "--metrics-port=" + std::to_string(metrics_port)},
                (dir / "local.log").string());
  // Polls until a scrape shows a trial evaluated by an in-process worker.
  std::string scrape;
  const auto end = std::chrono::steady_clock::now() + seconds(60);
  bool seen = false;
  while (!seen && std::chrono::steady_clock::now() < end && local.Running()) {
    absl::StatusOr<std::string> text = HttpGet(metrics_port, "/metrics");
    if (text.ok()) {
      scrape = *text;
      seen = scrape.find(R"(bitsweep_worker_trials_total{outcome="reported",worker="local-)") !=
                 std::string::npos &&
             std::regex_search(scrape, std::regex(R"(bitsweep_reports_total\{outcome="result"\} [1-9])"));
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  ASSERT_TRUE(seen) << local.Log() << scrape.substr(0, 3000);
  for (const char* expected :
       {R"(bitsweep_build_info{commit=")", R"(",component="local",version=")", "bitsweep_sweep_info{",
        R"(grpc_server_handled_total{grpc_code="OK",grpc_method="Lease")",
        R"(bitsweep_worker_trials_in_flight{worker="local-2"})", "process_resident_memory_bytes "}) {
    EXPECT_NE(scrape.find(expected), std::string::npos) << expected;
  }
  std::ofstream(dir / "scrape.txt") << scrape;
  CommandResult check = RunShell("promtool check metrics < " + (dir / "scrape.txt").string());
  EXPECT_EQ(check.status, 0) << check.output;
}

}  // namespace
}  // namespace bitsweep
