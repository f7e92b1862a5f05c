#include "common/metrics_exposer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/version.h"
#include "prometheus/gauge.h"

namespace bitsweep {
namespace {

prometheus::MetricFamily OneValue(std::string name, std::string help, prometheus::MetricType type,
                                  double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

std::string ReadSmallFile(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Seconds since the epoch at boot (/proc/stat's btime), or -1.
double BootTime() {
  for (absl::string_view line : absl::StrSplit(ReadSmallFile("/proc/stat"), '\n')) {
    if (absl::ConsumePrefix(&line, "btime ")) {
      double seconds = 0;
      if (absl::SimpleAtod(line, &seconds)) return seconds;
    }
  }
  return -1;
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;
  // /proc/self/stat: fields after the parenthesised command name, numbered from 3 (state).
  const std::string stat = ReadSmallFile("/proc/self/stat");
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::vector<absl::string_view> f =
        absl::StrSplit(absl::string_view(stat).substr(close + 2), ' ', absl::SkipEmpty());
    auto field = [&](int number) -> double {  // proc(5) numbering
      double value = 0;
      const size_t index = static_cast<size_t>(number - 3);
      if (index >= f.size() || !absl::SimpleAtod(f[index], &value)) return 0;
      return value;
    };
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    families.push_back(OneValue("process_cpu_seconds_total",
                                "Total user and system CPU time spent in seconds.",
                                MetricType::Counter, (field(14) + field(15)) / ticks));
    families.push_back(OneValue("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                MetricType::Gauge, field(23)));
    families.push_back(OneValue("process_resident_memory_bytes",
                                "Resident memory size in bytes.", MetricType::Gauge,
                                field(24) * page));
    families.push_back(OneValue("process_threads", "Number of OS threads in the process.",
                                MetricType::Gauge, field(20)));
    if (const double boot = BootTime(); boot >= 0) {
      families.push_back(OneValue("process_start_time_seconds",
                                  "Start time of the process since unix epoch in seconds.",
                                  MetricType::Gauge, boot + field(22) / ticks));
    }
  }
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  families.push_back(OneValue("process_open_fds", "Number of open file descriptors.",
                              MetricType::Gauge, fds));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    families.push_back(OneValue("process_max_fds", "Maximum number of open file descriptors.",
                                MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
  }
  return families;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    absl::string_view address, int port, absl::string_view component,
    std::shared_ptr<prometheus::Registry> registry) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", port, " is not in 0..65535"));
  }
  if (address.empty()) return absl::InvalidArgumentError("the metrics address is empty");
  // civetweb's listening syntax: IPv6 literals go in brackets.
  const std::string host = absl::StrContains(address, ':') && !absl::StartsWith(address, "[")
                               ? absl::StrCat("[", address, "]")
                               : std::string(address);
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {  // civetweb reports an address in use (or not ours) by throwing
    server->exposer_ = std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", e.what()));
  }
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  server->port_ = ports.empty() ? port : ports.front();
  prometheus::BuildGauge()
      .Name("bitsweep_build_info")
      .Help("1, labelled with the component, bitsweep version and git commit of this process")
      .Register(*registry)
      .Add({{"component", std::string(component)},
            {"version", ProjectVersion()},
            {"commit", GitCommit()}})
      .Set(1);
  server->exposer_->RegisterCollectable(registry);
  server->Register(std::make_shared<ProcessCollector>());
  return server;
}

void MetricsServer::Register(std::shared_ptr<prometheus::Collectable> collectable) {
  exposer_->RegisterCollectable(collectable);
  owned_.push_back(std::move(collectable));
}

}  // namespace bitsweep
