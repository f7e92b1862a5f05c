// Helpers for the operations tests (tests/ops): free loopback ports, a minimal HTTP GET, shell
// commands with their output, a real Prometheus server (Debian's `prometheus`) on its own port
// and storage directory, and the PromQL expressions of the provisioned Grafana dashboards.
//
//   int port = FreePort();
//   PrometheusServer prom(dir, config_yaml);        // starts it; stopped by pid in ~PrometheusServer
//   ASSERT_TRUE(prom.WaitReady(seconds(30)));
//   absl::StatusOr<nlohmann::json> r = prom.Api("/api/v1/query", {{"query", "up"}});
//   for (const DashboardQuery& q : DashboardQueries(dir)) ...
#ifndef BITSWEEP_TESTS_OPS_OPS_UTIL_H_
#define BITSWEEP_TESTS_OPS_OPS_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "tests/service/process.h"

namespace bitsweep::testing {

// A TCP port free on 127.0.0.1 right now (the kernel's pick; races are unlikely in tests).
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

// GET http://127.0.0.1:PORT/PATH (HTTP/1.0, the connection closes after the answer): the body of
// a 200 answer, an error otherwise.
inline absl::StatusOr<std::string> HttpGet(int port, const std::string& path,
                                           const std::string& host = "127.0.0.1") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  timeval timeout{.tv_sec = 20, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &address.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", host, ":", port));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, "\r\nConnection: close\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("send failed");
  }
  std::string response;
  char buffer[65536];
  for (;;) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    response.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) {
    return absl::UnavailableError(absl::StrCat("no HTTP answer from ", host, ":", port, path));
  }
  if (response.compare(0, 12, "HTTP/1.1 200") != 0 && response.compare(0, 12, "HTTP/1.0 200") != 0) {
    return absl::UnavailableError(absl::StrCat(host, ":", port, path, ": ",
                                               response.substr(0, response.find("\r\n")), " ",
                                               response.substr(body + 4, 300)));
  }
  return response.substr(body + 4);
}

inline std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[4];
      std::snprintf(hex, sizeof(hex), "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// Runs `command` through /bin/sh; its exit status and combined output.
struct CommandResult {
  int status = -1;
  std::string output;
};
inline CommandResult RunShell(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The HTTP API of a Prometheus reachable on 127.0.0.1:port.
class PrometheusApi {
 public:
  explicit PrometheusApi(int port) : port_(port) {}
  virtual ~PrometheusApi() = default;
  int port() const { return port_; }

  // GET an API path with query parameters; the parsed JSON answer.
  absl::StatusOr<nlohmann::json> Api(const std::string& path,
                                     const std::map<std::string, std::string>& params) const {
    std::string url = path;
    char sep = '?';
    for (const auto& [key, value] : params) {
      url += sep + key + "=" + UrlEncode(value);
      sep = '&';
    }
    absl::StatusOr<std::string> body = HttpGet(port_, url);
    if (!body.ok()) return body.status();
    nlohmann::json parsed = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) return absl::InternalError("unparsable answer: " + *body);
    return parsed;
  }

  // Samples of `expr` over [start, end] (unix seconds) at `step` seconds: how many series, and
  // how many samples are numbers (not NaN). An error for an invalid expression.
  struct RangeData {
    int series = 0;
    int numeric_samples = 0;
  };
  absl::StatusOr<RangeData> QueryRange(const std::string& expr, double start, double end,
                                       double step = 1) const {
    absl::StatusOr<nlohmann::json> answer =
        Api("/api/v1/query_range", {{"query", expr},
                                    {"start", absl::StrFormat("%.3f", start)},
                                    {"end", absl::StrFormat("%.3f", end)},
                                    {"step", absl::StrFormat("%.3f", step)}});
    if (!answer.ok()) return answer.status();
    if ((*answer)["status"] != "success") {
      return absl::InvalidArgumentError(absl::StrCat(expr, ": ", answer->dump()));
    }
    RangeData data;
    for (const nlohmann::json& series : (*answer)["data"]["result"]) {
      ++data.series;
      for (const nlohmann::json& sample : series["values"]) {
        const std::string value = sample[1].get<std::string>();
        if (value != "NaN" && value != "+Inf" && value != "-Inf") ++data.numeric_samples;
      }
    }
    return data;
  }

  // Number of series `expr` returns now.
  absl::StatusOr<int> InstantSeries(const std::string& expr) const {
    absl::StatusOr<nlohmann::json> answer = Api("/api/v1/query", {{"query", expr}});
    if (!answer.ok()) return answer.status();
    if ((*answer)["status"] != "success") {
      return absl::InvalidArgumentError(absl::StrCat(expr, ": ", answer->dump()));
    }
    return static_cast<int>((*answer)["data"]["result"].size());
  }

  // Waits until `expr` returns at least `series` series.
  bool WaitFor(const std::string& expr, int series, std::chrono::seconds timeout) const {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      absl::StatusOr<int> n = InstantSeries(expr);
      if (n.ok() && *n >= series) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return false;
  }

  // Waits until `targets` targets each have at least `samples` samples of `up`.
  bool WaitScraped(int targets, int samples, std::chrono::seconds timeout) const {
    return WaitFor(absl::StrCat("count_over_time(up[10m]) >= ", samples), targets, timeout);
  }

  // Every dashboard expression (rate windows `rate_window`) evaluated over [start, end]: one line
  // per expression that fails or returns no number. Empty: all return data.
  std::vector<std::string> DashboardGaps(const std::filesystem::path& dashboards_dir,
                                         const std::string& rate_window, double start,
                                         double end, int* checked) const;

 private:
  int port_;
};

// Debian's prometheus on 127.0.0.1:port() with its own storage under `dir`, started with
// `config` (YAML text, written to dir/prometheus.yml) and killed by pid when destroyed.
class PrometheusServer : public PrometheusApi {
 public:
  PrometheusServer(const std::filesystem::path& dir, const std::string& config)
      : PrometheusApi(FreePort()) {
    std::filesystem::create_directories(dir / "data");
    std::ofstream(dir / "prometheus.yml") << config;
    process_ = std::make_unique<Process>(
        "/usr/bin/prometheus",
        std::vector<std::string>{
            "--config.file=" + (dir / "prometheus.yml").string(),
            "--storage.tsdb.path=" + (dir / "data").string(),
            "--web.listen-address=127.0.0.1:" + std::to_string(port()),
            "--log.level=warn"},
        (dir / "prometheus.log").string());
  }

  std::string Log() const { return process_->Log(); }

  bool WaitReady(std::chrono::seconds timeout) const {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (HttpGet(port(), "/-/ready").ok()) return true;
      if (!process_->Running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  std::unique_ptr<Process> process_;
};

// One PromQL expression of a provisioned dashboard panel, with Grafana's variables replaced for
// a direct Prometheus query: $__rate_interval by `rate_window`, $sweep by ".*" (All).
struct DashboardQuery {
  std::string dashboard;
  std::string panel;
  std::string expr;
};
inline std::vector<DashboardQuery> DashboardQueries(const std::filesystem::path& dashboards_dir,
                                                    const std::string& rate_window) {
  std::vector<DashboardQuery> queries;
  for (const auto& entry : std::filesystem::directory_iterator(dashboards_dir)) {
    if (entry.path().extension() != ".json") continue;
    const nlohmann::json dashboard = nlohmann::json::parse(ReadFile(entry.path()));
    for (const nlohmann::json& panel : dashboard["panels"]) {
      for (const nlohmann::json& target : panel["targets"]) {
        queries.push_back({dashboard["title"].get<std::string>(),
                           panel["title"].get<std::string>(),
                           absl::StrReplaceAll(target["expr"].get<std::string>(),
                                               {{"$__rate_interval", rate_window},
                                                {"$sweep", ".*"}})});
      }
    }
  }
  return queries;
}

inline std::vector<std::string> PrometheusApi::DashboardGaps(
    const std::filesystem::path& dashboards_dir, const std::string& rate_window, double start,
    double end, int* checked) const {
  std::vector<std::string> gaps;
  for (const DashboardQuery& q : DashboardQueries(dashboards_dir, rate_window)) {
    absl::StatusOr<RangeData> data = QueryRange(q.expr, start, end);
    ++*checked;
    if (!data.ok()) {
      gaps.push_back(absl::StrCat(q.dashboard, " / ", q.panel, ": ", data.status().message()));
    } else if (data->series == 0 || data->numeric_samples == 0) {
      gaps.push_back(absl::StrCat(q.dashboard, " / ", q.panel, ": no data for ", q.expr));
    }
  }
  return gaps;
}

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_OPS_OPS_UTIL_H_
