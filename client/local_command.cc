// `bitsweep local`: the coordinator, its gRPC server on a loopback port and N workers in this
// process, driven through the same Explorer calls a remote client makes.
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/command_line.h"
#include "client/explorer_client.h"
#include "client/service_commands.h"
#include "client/zoo_models.h"
#include "common/clock.h"
#include "common/metrics_exposer.h"
#include "common/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "prometheus/registry.h"
#include "server/coordinator/coordinator.h"
#include "server/coordinator/metrics.h"
#include "server/service/services.h"
#include "worker/trial_executor.h"
#include "worker/worker.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, threads);

ABSL_FLAG(int32_t, workers, 2, "local: workers in this process");
ABSL_FLAG(std::string, db, "results.db", "local: the SQLite results database");
ABSL_FLAG(int32_t, metrics_port, 0,
          "local: serve Prometheus /metrics of the coordinator and workers on 127.0.0.1:PORT "
          "(0: off)");

namespace bitsweep::cli {

absl::Status LocalCommand() {
  const int workers = absl::GetFlag(FLAGS_workers);
  const int threads = absl::GetFlag(FLAGS_threads);
  if (workers < 1) return UsageError("--workers must be >= 1");
  if (threads < 1) return UsageError("--threads must be >= 1");
  if (absl::GetFlag(FLAGS_model).empty()) {
    return UsageError("--model M.onnx or --model zoo:lenet5 is required");
  }
  ASSIGN_OR_RETURN(v1::SweepSpec spec, SweepSpecFromFlags());
  ASSIGN_OR_RETURN(std::string model_path,
                   ResolveModel(absl::GetFlag(FLAGS_model), spec.settings().dataset(), threads));

  // Metrics (optional): the coordinator's and every worker's series on one loopback endpoint.
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<MetricsServer> metrics;
  if (metrics_port < 0 || metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics-port must be in 0..65535");
  }
  if (metrics_port > 0) {
    ASSIGN_OR_RETURN(metrics, MetricsServer::Start("127.0.0.1", metrics_port, "local", registry));
  }
  prometheus::Registry* const metrics_registry = metrics != nullptr ? registry.get() : nullptr;

  RealClock clock;
  server::CoordinatorOptions coordinator_options;
  coordinator_options.db_path = absl::GetFlag(FLAGS_db);
  coordinator_options.clock = &clock;
  coordinator_options.metrics = metrics_registry;
  ASSIGN_OR_RETURN(std::unique_ptr<server::Coordinator> coordinator,
                   server::Coordinator::Open(coordinator_options));
  if (metrics != nullptr) {
    metrics->Register(std::make_shared<server::SweepMetricsCollector>(coordinator.get(),
                                                                      /*keep_finished=*/5));
  }
  server::ServerOptions server_options;
  server_options.listen = "127.0.0.1:0";  // loopback only
  server_options.metrics = metrics_registry;
  ASSIGN_OR_RETURN(std::unique_ptr<server::CoordinatorServer> server,
                   server::CoordinatorServer::Start(coordinator.get(), server_options));
  const std::string address = absl::StrCat("127.0.0.1:", server->port());

  // The workers share the cores (each trial takes its share of --threads when it starts) and one
  // executor, so datasets, models and calibrations are loaded once (image datasets are decoded
  // into the dataset cache folder once across runs).
  worker::TrialExecutorOptions executor_options;
  executor_options.dataset_cache_dir = worker::DefaultCacheDir("datasets");
  auto executor = std::make_shared<worker::TrialExecutor>(executor_options);
  auto thread_budget = std::make_shared<worker::ThreadBudget>(threads);
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  std::vector<std::unique_ptr<worker::Worker>> pool;
  std::vector<std::thread> loops;
  for (int i = 0; i < workers; ++i) {
    worker::WorkerOptions options;
    options.channel = channel;
    options.name = absl::StrCat("local-", i + 1);
    options.threads = std::max(1, threads / workers);  // announced; trials take their share
    options.executor = executor;
    options.thread_budget = thread_budget;
    options.lease_wait = absl::Seconds(1);
    options.log_to_stderr = false;
    options.metrics = metrics_registry;
    ASSIGN_OR_RETURN(std::unique_ptr<worker::Worker> w, worker::Worker::Create(options));
    pool.push_back(std::move(w));
  }
  for (auto& w : pool) loops.emplace_back([&w] { (void)w->Run(); });
  auto stop_workers = [&] {
    for (auto& w : pool) w->Stop();
    for (std::thread& t : loops) t.join();
    loops.clear();
  };

  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client,
                     ExplorerClient::Connect(address, ConnectOptions{}));
    ASSIGN_OR_RETURN(std::string hash, client->UploadModelFile(model_path));
    spec.set_model_hash(hash);
    ASSIGN_OR_RETURN(v1::Sweep sweep, client->Submit(spec));
    std::fprintf(stderr, "sweep %lld: %s on %s, %d workers sharing %d threads, results in %s%s\n",
                 static_cast<long long>(sweep.id()), spec.strategy().c_str(), model_path.c_str(),
                 workers, threads, absl::GetFlag(FLAGS_db).c_str(),
                 metrics != nullptr
                     ? absl::StrCat(", metrics on 127.0.0.1:", metrics->port()).c_str()
                     : "");
    ASSIGN_OR_RETURN(sweep, FollowSweep(*client, sweep.id(), /*progress=*/true));
    RETURN_IF_ERROR(SweepOutcome(sweep));
    absl::PrintF("sweep %d %s: %d trials (%d cached, %d failed)", sweep.id(),
                 sweep.state() == v1::SWEEP_SUCCEEDED ? "finished" : "ended",
                 sweep.trials_total(), sweep.trials_cached(), sweep.trials_failed());
    if (sweep.has_baseline_top1()) {
      absl::PrintF(", fp32 top1 %.2f%%", 100 * sweep.baseline_top1());
    }
    absl::PrintF("\n");
    v1::GetFrontierRequest request;
    request.set_sweep_id(sweep.id());
    ASSIGN_OR_RETURN(v1::Frontier frontier, client->GetFrontier(request));
    RETURN_IF_ERROR(PrintFrontier(frontier));
    absl::PrintF("\nall trials: sqlite3 %s 'SELECT * FROM trial_summary WHERE sweep_id = %d'\n",
                 absl::GetFlag(FLAGS_db), sweep.id());
    return absl::OkStatus();
  }();
  stop_workers();
  server->Shutdown();
  metrics.reset();  // its per-sweep collector reads the coordinator
  return status;
}

}  // namespace bitsweep::cli
