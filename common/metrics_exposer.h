// The /metrics endpoint every bitsweep process offers (bitsweep-coordinator, bitsweep-worker,
// `bitsweep local`): a prometheus-cpp Exposer on ADDRESS:PORT serving the process's registry, the
// standard process_* metrics (CPU, memory, open fds, start time, threads, read from /proc at scrape
// time) and bitsweep_build_info{component,version}. Link bitsweep_metrics_exposer.
//
//   auto registry = std::make_shared<prometheus::Registry>();
//   ASSIGN_OR_RETURN(auto server, MetricsServer::Start("127.0.0.1", 9100, "coordinator",
//                                                      registry));   // keep it alive
//   server->Register(extra_collectable);   // e.g. scrape-time per-sweep series
//
// The address defaults to loopback in both servers (--metrics_address): exposing metrics beyond
// the machine is an explicit choice (containers pass 0.0.0.0).
#ifndef BITSWEEP_COMMON_METRICS_EXPOSER_H_
#define BITSWEEP_COMMON_METRICS_EXPOSER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace bitsweep {

// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds, process_threads: the names the
// official Prometheus clients use, so standard dashboards and alerts apply.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

class MetricsServer {
 public:
  // `component`: "coordinator", "worker" or "local" (bitsweep_build_info's label). Port 0 picks a
  // free port (port() tells which).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      absl::string_view address, int port, absl::string_view component,
      std::shared_ptr<prometheus::Registry> registry);

  int port() const { return port_; }
  // Serves `collectable` too; kept alive by the server.
  void Register(std::shared_ptr<prometheus::Collectable> collectable);

 private:
  MetricsServer() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::vector<std::shared_ptr<prometheus::Collectable>> owned_;
  int port_ = 0;
};

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_METRICS_EXPOSER_H_
