// bitsweep-worker: pulls trials from a coordinator and evaluates them with the engine.
//
//   bitsweep-worker --coordinator 127.0.0.1:7070 [--threads 2] [--name host-a]
//       [--cache_dir ~/.cache/bitsweep/models] [--metrics_port 9101] [--token SECRET]
//
// SIGINT / SIGTERM stop it gracefully (a second one exits at once). Several workers usually share
// a machine's cores, so OpenMP threads are made to sleep instead of spin when idle
// (OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise).
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/flag_names.h"
#include "common/log.h"
#include "common/metrics_exposer.h"
#include "common/version.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "oneapi/dnnl/dnnl.h"
#include "prometheus/registry.h"
#include "worker/worker.h"

ABSL_FLAG(std::string, coordinator, "", "coordinator address, host:port (required)");
ABSL_FLAG(int32_t, threads, 2, "engine (OpenMP) threads per trial");
ABSL_FLAG(std::string, name, "", "worker name shown by the coordinator (default: host-pid)");
ABSL_FLAG(std::string, cache_dir, "",
          "model cache directory (default: $XDG_CACHE_HOME/bitsweep/models or "
          "~/.cache/bitsweep/models)");
ABSL_FLAG(std::string, dataset_cache_dir, "",
          "decoded image datasets (default: $XDG_CACHE_HOME/bitsweep/datasets or "
          "~/.cache/bitsweep/datasets)");
ABSL_FLAG(int32_t, metrics_port, 0, "serve Prometheus /metrics on this port (0: off)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1",
          "address /metrics listens on (0.0.0.0: every interface, e.g. in a container)");
ABSL_FLAG(std::string, token, "", "bearer token the coordinator expects from workers");
ABSL_FLAG(std::string, token_file, "", "read --token from this file (e.g. a Docker secret; first line)");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificates: connect to the coordinator with TLS");
ABSL_FLAG(int64_t, lease_wait_ms, 10000, "Lease long-poll limit in milliseconds");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "bitsweep-worker: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything can start OpenMP's runtime, which reads it once.
  setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);

  absl::SetProgramUsageMessage(
      "pulls trials from a bitsweep coordinator and evaluates them.\n"
      "usage: bitsweep-worker --coordinator HOST:PORT [--threads N] [--name NAME] "
      "[--cache_dir DIR] [--dataset_cache_dir DIR] [--metrics_port P] [--metrics_address A] "
      "[--token T | --token_file F] [--tls_ca PEM]");
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] {
    const dnnl_version_t* dnnl = dnnl_version();
    return bitsweep::VersionText(
        "bitsweep-worker",
        {{"engine", bitsweep::worker::kEngineVersion},
         {"oneDNN", absl::StrCat(dnnl->major, ".", dnnl->minor, ".", dnnl->patch)},
         {"gRPC", grpc::Version()}});
  };
  absl::SetFlagsUsageConfig(usage_config);  // --version prints it and exits 0
  std::vector<std::string> normalized;
  std::vector<char*> args(argv, argv + argc);
  bitsweep::NormalizeFlagNames(&normalized, &args);
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (positional.size() > 1) {
    return Fail(absl::StrCat("unexpected argument '", positional[1], "' (flags start with --)"));
  }
  bitsweep::worker::WorkerOptions options;
  options.coordinator_address = absl::GetFlag(FLAGS_coordinator);
  if (options.coordinator_address.empty()) return Fail("--coordinator HOST:PORT is required");
  options.threads = absl::GetFlag(FLAGS_threads);
  if (options.threads < 1) return Fail("--threads must be >= 1");
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (metrics_port < 0 || metrics_port > 65535) return Fail("--metrics_port must be in 0..65535");
  const int64_t lease_wait_ms = absl::GetFlag(FLAGS_lease_wait_ms);
  if (lease_wait_ms < 0) return Fail("--lease_wait_ms must be >= 0");
  options.lease_wait = absl::Milliseconds(lease_wait_ms);
  options.name = absl::GetFlag(FLAGS_name);
  options.model_cache_dir = absl::GetFlag(FLAGS_cache_dir);
  options.dataset_cache_dir = absl::GetFlag(FLAGS_dataset_cache_dir);
  absl::StatusOr<std::string> token = bitsweep::ResolveToken(
      absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file), "BITSWEEP_TOKEN");
  if (!token.ok()) return Fail(std::string(token.status().message()));
  options.bearer_token = *std::move(token);

  // Signals are taken by one thread with sigwait: every other thread (gRPC's, OpenMP's) inherits
  // the blocked mask, so no handler ever runs in the middle of the engine.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<bitsweep::MetricsServer> metrics;
  if (metrics_port > 0) {
    absl::StatusOr<std::unique_ptr<bitsweep::MetricsServer>> served = bitsweep::MetricsServer::Start(
        absl::GetFlag(FLAGS_metrics_address), metrics_port, "worker", registry);
    if (!served.ok()) return Fail(std::string(served.status().message()));
    metrics = *std::move(served);
    options.metrics = registry.get();
  }
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
    absl::StatusOr<std::string> roots = bitsweep::ReadFileToString(ca);
    if (!roots.ok()) return Fail(absl::StrCat("--tls_ca: ", roots.status().message()));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *std::move(roots);
    options.channel = grpc::CreateChannel(options.coordinator_address, grpc::SslCredentials(ssl));
  }

  absl::StatusOr<std::unique_ptr<bitsweep::worker::Worker>> worker =
      bitsweep::worker::Worker::Create(options);
  if (!worker.ok()) return Fail(std::string(worker.status().message()));
  bitsweep::worker::Worker* w = worker->get();

  std::thread signal_thread([w, signals] {
    int signal = 0;
    sigwait(&signals, &signal);
    bitsweep::Log(bitsweep::LogLevel::kInfo, "bitsweep-worker",
                  absl::StrCat(signal == SIGINT ? "SIGINT" : "SIGTERM",
                               ": stopping (again to exit at once)"));
    w->Stop();
    sigwait(&signals, &signal);
    std::_Exit(130);
  });
  signal_thread.detach();  // blocked in sigwait until the process ends

  bitsweep::Log(
      bitsweep::LogLevel::kInfo, "bitsweep-worker",
      absl::StrCat("starting (", bitsweep::worker::kEngineVersion, "): coordinator ",
                   options.coordinator_address, ", ", options.threads, " threads",
                   metrics != nullptr ? absl::StrCat(", metrics on ",
                                                     absl::GetFlag(FLAGS_metrics_address), ":",
                                                     metrics->port())
                                      : ""));
  const absl::Status status = w->Run();
  if (!status.ok()) return Fail(std::string(status.message()));
  bitsweep::Log(bitsweep::LogLevel::kInfo, "bitsweep-worker", "exiting");
  return 0;
}
