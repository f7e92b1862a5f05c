// bitsweep-coordinator: the coordinator as a server. Plans sweeps, leases trials to workers,
// stores results in SQLite and serves frontiers over gRPC; Prometheus metrics on
// --metrics_address:--metrics_port (docs/SERVICE.md lists them).
//
//   bitsweep-coordinator --listen 0.0.0.0:50051 --db /var/lib/bitsweep/results.db
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/flag_names.h"
#include "common/log.h"
#include "common/metrics_exposer.h"
#include "common/version.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "server/coordinator/coordinator.h"
#include "server/coordinator/metrics.h"
#include "server/service/services.h"
#include "sqlite3.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "host:port to serve gRPC on");
ABSL_FLAG(std::string, db, "", "SQLite results database (created if missing)");
ABSL_FLAG(std::string, model_dir, "",
          "uploaded models, one file each (default: the --db path with -models appended)");
ABSL_FLAG(int64_t, max_model_bytes, 2147483647,
          "largest model accepted by UploadModel (at most 2147483647, protobuf's limit); "
          "uploads are streamed to --model_dir, never held in memory");
ABSL_FLAG(int32_t, metrics_port, 0, "serve Prometheus /metrics on this port (0: off)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1",
          "address /metrics listens on (0.0.0.0: every interface, e.g. in a container)");
ABSL_FLAG(int32_t, metrics_finished_sweeps, 5,
          "per-sweep series are kept for running sweeps and this many finished ones");
ABSL_FLAG(int32_t, lease_seconds, 25,
          "a lease lasts this long past its last heartbeat (a killed worker costs about this)");
ABSL_FLAG(int32_t, heartbeat_seconds, 1,
          "workers heartbeat this often while busy (they hear of a cancel at the next one)");
ABSL_FLAG(std::string, client_token, "",
          "bearer token clients must send (empty: none; visible in ps: prefer the file or "
          "BITSWEEP_CLIENT_TOKEN)");
ABSL_FLAG(std::string, worker_token, "",
          "bearer token workers must send (empty: none; or BITSWEEP_WORKER_TOKEN)");
ABSL_FLAG(std::string, client_token_file, "",
          "read --client_token from this file (e.g. a Docker secret; first line)");
ABSL_FLAG(std::string, worker_token_file, "", "read --worker_token from this file");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain (with --tls_key: serve TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "bitsweep-coordinator: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "bitsweep-coordinator --listen ADDR --db FILE [--metrics_port P] [--metrics_address A] "
      "[--client_token T | --client_token_file F] [--worker_token T | --worker_token_file F] "
      "[--tls_cert PEM --tls_key PEM]");
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] {
    return bitsweep::VersionText("bitsweep-coordinator",
                                 {{"gRPC", grpc::Version()}, {"SQLite", sqlite3_libversion()}});
  };
  absl::SetFlagsUsageConfig(usage_config);  // --version prints it and exits 0
  std::vector<std::string> normalized;
  std::vector<char*> args(argv, argv + argc);
  bitsweep::NormalizeFlagNames(&normalized, &args);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  const std::string db = absl::GetFlag(FLAGS_db);
  if (db.empty()) return Fail("--db is required (the SQLite results file)");
  if (absl::GetFlag(FLAGS_lease_seconds) < 1 || absl::GetFlag(FLAGS_heartbeat_seconds) < 1 ||
      absl::GetFlag(FLAGS_heartbeat_seconds) >= absl::GetFlag(FLAGS_lease_seconds)) {
    return Fail("need 1 <= --heartbeat_seconds < --lease_seconds");
  }

  // Debian's Abseil is built with Mutex deadlock detection on: it records every lock in a
  // global graph, a measurable cost on the coordinator's hot lease/report path (the tests keep
  // it on and would catch lock-order bugs).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<bitsweep::MetricsServer> metrics;
  if (const int port = absl::GetFlag(FLAGS_metrics_port); port < 0 || port > 65535) {
    return Fail("--metrics_port must be in 0..65535");
  } else if (port > 0) {
    absl::StatusOr<std::unique_ptr<bitsweep::MetricsServer>> served = bitsweep::MetricsServer::Start(
        absl::GetFlag(FLAGS_metrics_address), port, "coordinator", registry);
    if (!served.ok()) return Fail(std::string(served.status().message()));
    metrics = *std::move(served);
  }

  bitsweep::RealClock clock;
  bitsweep::server::CoordinatorOptions options;
  options.db_path = db;
  options.model_dir = absl::GetFlag(FLAGS_model_dir);
  options.max_model_bytes = absl::GetFlag(FLAGS_max_model_bytes);
  if (options.max_model_bytes < 1 || options.max_model_bytes > 2147483647) {
    return Fail("--max_model_bytes must be in 1..2147483647");
  }
  options.clock = &clock;
  options.lease_duration = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  options.heartbeat_interval = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_seconds));
  options.metrics = metrics != nullptr ? registry.get() : nullptr;
  auto coordinator = bitsweep::server::Coordinator::Open(options);
  if (!coordinator.ok()) return Fail(std::string(coordinator.status().message()));
  if (metrics != nullptr) {
    metrics->Register(std::make_shared<bitsweep::server::SweepMetricsCollector>(
        coordinator->get(), absl::GetFlag(FLAGS_metrics_finished_sweeps)));
  }

  bitsweep::server::ServerOptions server_options;
  server_options.listen = absl::GetFlag(FLAGS_listen);
  absl::StatusOr<std::string> client_token =
      bitsweep::ResolveToken(absl::GetFlag(FLAGS_client_token),
                             absl::GetFlag(FLAGS_client_token_file), "BITSWEEP_CLIENT_TOKEN");
  if (!client_token.ok()) return Fail(std::string(client_token.status().message()));
  server_options.client_token = *std::move(client_token);
  absl::StatusOr<std::string> worker_token =
      bitsweep::ResolveToken(absl::GetFlag(FLAGS_worker_token),
                             absl::GetFlag(FLAGS_worker_token_file), "BITSWEEP_WORKER_TOKEN");
  if (!worker_token.ok()) return Fail(std::string(worker_token.status().message()));
  server_options.worker_token = *std::move(worker_token);
  server_options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  server_options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  server_options.metrics = options.metrics;
  auto server = bitsweep::server::CoordinatorServer::Start(coordinator->get(), server_options);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  std::printf("bitsweep-coordinator listening on port %d, database %s%s\n", (*server)->port(),
              db.c_str(),
              metrics != nullptr
                  ? absl::StrCat(", metrics on ", absl::GetFlag(FLAGS_metrics_address), ":",
                                 metrics->port())
                        .c_str()
                  : "");
  std::fflush(stdout);
  auto on_off = [](bool on) { return on ? "on" : "off"; };
  bitsweep::Log(bitsweep::LogLevel::kInfo, "coordinator",
                absl::StrCat("started ", bitsweep::ProjectVersion(), " (", bitsweep::GitCommit(),
                             "): gRPC on ", server_options.listen, " (port ", (*server)->port(),
                             "), client token ", on_off(!server_options.client_token.empty()),
                             ", worker token ", on_off(!server_options.worker_token.empty()),
                             ", TLS ", on_off(!server_options.tls_cert_file.empty()),
                             ", database ", db));

  int signal = 0;
  sigwait(&stop_signals, &signal);
  std::printf("bitsweep-coordinator: signal %d, shutting down\n", signal);
  bitsweep::Log(bitsweep::LogLevel::kInfo, "coordinator",
                absl::StrCat(signal == SIGINT ? "SIGINT" : "SIGTERM", ": shutting down"));
  (*server)->Shutdown();
  metrics.reset();  // its per-sweep collector reads the coordinator: stop scrapes first
  bitsweep::Log(bitsweep::LogLevel::kInfo, "coordinator", "stopped");
  return 0;
}
