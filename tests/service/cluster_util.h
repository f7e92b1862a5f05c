// Helpers for end-to-end tests that start a real bitsweep-coordinator on loopback: a fresh
// per-test directory, the coordinator process with its port and a connected client, and every
// trial of a sweep. (service_test.cc and tests/ops/metrics_test.cc predate these and still hold
// their own copies.)
//
//   fs::path dir = FreshTestDir("bitsweep_cancel");
//   LoopbackCoordinator c = StartLoopbackCoordinator(dir, {"--lease_seconds=30"});
//   ASSERT_NE(c.client, nullptr) << c.process->Log();
//   std::vector<v1::Trial> trials = ListAllTrials(*c.client, sweep_id);
#ifndef BITSWEEP_TESTS_SERVICE_CLUSTER_UTIL_H_
#define BITSWEEP_TESTS_SERVICE_CLUSTER_UTIL_H_

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "client/explorer_client.h"
#include "gtest/gtest.h"
#include "tests/service/process.h"

namespace bitsweep::testing {

// TempDir/<prefix>_<test name>_<pid>, empty.
inline std::filesystem::path FreshTestDir(const std::string& prefix) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      (prefix + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
       std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

struct LoopbackCoordinator {
  std::unique_ptr<Process> process;
  std::string address;                         // 127.0.0.1:PORT; empty when it did not start
  std::unique_ptr<cli::ExplorerClient> client;  // null when it did not start
  std::string db;                               // its SQLite file
};

// bitsweep-coordinator on a free loopback port with its database in `dir` and `flags` added,
// logging to dir/coordinator.log; waits up to 30 s for it to listen.
inline LoopbackCoordinator StartLoopbackCoordinator(const std::filesystem::path& dir,
                                                    std::vector<std::string> flags) {
  LoopbackCoordinator c;
  c.db = (dir / "results.db").string();
  flags.insert(flags.begin(), {"--listen=127.0.0.1:0", "--db=" + c.db});
  c.process = std::make_unique<Process>(BITSWEEP_COORDINATOR, flags,
                                        (dir / "coordinator.log").string());
  std::optional<std::string> port =
      c.process->WaitForLine("listening on port ", std::chrono::seconds(30));
  if (!port.has_value()) return c;
  c.address = "127.0.0.1:" + port->substr(0, port->find(','));
  absl::StatusOr<std::unique_ptr<cli::ExplorerClient>> client =
      cli::ExplorerClient::Connect(c.address, {});
  EXPECT_TRUE(client.ok()) << client.status();
  if (client.ok()) c.client = *std::move(client);
  return c;
}

// Every trial of the sweep (one page of up to 1000).
inline std::vector<v1::Trial> ListAllTrials(cli::ExplorerClient& client, int64_t sweep_id) {
  v1::ListTrialsRequest request;
  request.set_sweep_id(sweep_id);
  request.set_page_size(1000);
  absl::StatusOr<v1::ListTrialsResponse> r = client.ListTrials(request);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::vector<v1::Trial>(r->trials().begin(), r->trials().end())
                : std::vector<v1::Trial>{};
}

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_SERVICE_CLUSTER_UTIL_H_
