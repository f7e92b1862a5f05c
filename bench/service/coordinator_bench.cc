// Coordinator capacity: lease + report round trips per second from no-op workers on loopback,
// and the coordinator's peak RSS once it holds many stored trials.
//
//   build/bench/service/coordinator_bench [--sweeps 10] [--budget 10000] [--workers 4]
//
// Starts a real bitsweep-coordinator process on a temporary database, submits `sweeps` random
// sweeps of `budget` configs each on LeNet-5, and lets `workers` threads lease and report
// synthetic results as fast as the coordinator allows, the way the real worker calls: a trial's
// report leases the next one, Lease (long poll) only when that brought nothing. Prints the round trips per second
// (excluding the first second, which includes planning the first stages) and the coordinator's
// VmHWM from /proc.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bitsweep/v1/worker.grpc.pb.h"
#include "client/explorer_client.h"
#include "grpcpp/grpcpp.h"
#include "tests/service/process.h"

ABSL_FLAG(int32_t, sweeps, 10, "random sweeps to submit");
ABSL_FLAG(int64_t, budget, 10000, "configs per sweep");
ABSL_FLAG(int32_t, workers, 4, "no-op worker threads");
ABSL_FLAG(int32_t, lease_batch, 1,
          "trials asked for per Lease call, and per report of a batch's last trial (the real "
          "worker asks for 1); each trial is still reported by its own Report call");
ABSL_FLAG(bool, lease_with_report, true,
          "the report of a batch's last trial leases the next batch (ReportRequest.lease_next), "
          "as the real worker does; false: a separate Lease call per batch");
ABSL_FLAG(bool, channel_per_worker, false,
          "give every no-op worker its own gRPC channel (own connection), as separate worker "
          "processes have; default: all share one channel");

namespace {

using Clock = std::chrono::steady_clock;

std::string ReadStatusField(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return line.substr(field.size());
  }
  return "?";
}

// A plausible result: accuracy and size fall with the config's length (a stand-in for width).
bitsweep::v1::TrialResult SyntheticResult(const bitsweep::v1::LeasedTrial& t) {
  bitsweep::v1::TrialResult r;
  const size_t h = std::hash<std::string>()(t.spec().config_json());
  r.set_top1(0.80 + (h % 1000) / 10000.0);
  r.set_top5(0.99);
  r.set_samples(10000);
  r.set_size_bits(100000 + static_cast<int64_t>(h % 400000));
  r.set_energy_pj(1e5 + (h % 7919) * 10.0);
  r.set_bops(1000000 + static_cast<int64_t>(h % 1000000));
  r.set_hardware_profile("synthetic");
  r.set_engine_version("no-op");
  for (int i = 0; i < 5; ++i) {
    bitsweep::v1::LayerResult* layer = r.add_layers();
    layer->set_name("layer" + std::to_string(i + 1));
    layer->set_layer_class(i < 2 ? "conv" : "fc");
    layer->set_weight_count(1000 * (i + 1));
    layer->set_macs(10000 * (i + 1));
    layer->mutable_weights()->set_format("fp32");
    layer->mutable_weights()->set_bits(32);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "bitsweep_coordinator_bench";
  fs::remove_all(dir);
  fs::create_directories(dir);
  bitsweep::testing::Process coordinator(
      BITSWEEP_COORDINATOR, {"--listen=127.0.0.1:0", "--db=" + (dir / "bench.db").string()},
      (dir / "coordinator.log").string());
  auto port = coordinator.WaitForLine("listening on port ", std::chrono::seconds(30));
  if (!port) {
    std::fprintf(stderr, "coordinator did not start:\n%s\n", coordinator.Log().c_str());
    return 1;
  }
  const std::string address = "127.0.0.1:" + port->substr(0, port->find(','));
  auto client = bitsweep::cli::ExplorerClient::Connect(address, {});
  auto hash = (*client)->UploadModelFile(BITSWEEP_LENET5_MODEL);
  if (!hash.ok()) {
    std::fprintf(stderr, "upload: %s\n", std::string(hash.status().message()).c_str());
    return 1;
  }
  const int sweeps = absl::GetFlag(FLAGS_sweeps);
  for (int s = 0; s < sweeps; ++s) {
    bitsweep::v1::SweepSpec spec;
    spec.set_model_hash(*hash);
    spec.set_strategy("random");
    spec.set_budget(absl::GetFlag(FLAGS_budget));
    spec.set_seed(s + 1);
    spec.mutable_settings()->mutable_dataset()->set_eval("idx:/nonexistent/t10k");
    for (int bits = 2; bits <= 16; ++bits) {
      spec.mutable_space()->add_weight_formats("fixed:" + std::to_string(bits));
      spec.mutable_space()->add_activation_formats("fixed:" + std::to_string(bits));
    }
    auto sweep = (*client)->Submit(spec);
    if (!sweep.ok()) {
      std::fprintf(stderr, "submit: %s\n", std::string(sweep.status().message()).c_str());
      return 1;
    }
  }

  std::atomic<int64_t> round_trips{0};
  std::atomic<int> idle_workers{0};
  const int workers = absl::GetFlag(FLAGS_workers);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      grpc::ChannelArguments args;
      args.SetInt("bench_worker", w);  // distinct arguments: a channel (connection) of its own
      auto stub = bitsweep::v1::WorkerService::NewStub(
          absl::GetFlag(FLAGS_channel_per_worker)
              ? grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)
              : channel);
      bitsweep::v1::RegisterRequest reg;
      reg.set_name("noop-" + std::to_string(w));
      bitsweep::v1::RegisterResponse registered;
      grpc::ClientContext rc;
      if (!stub->Register(&rc, reg, &registered).ok()) return;
      const int batch = absl::GetFlag(FLAGS_lease_batch);
      const bool lease_with_report = absl::GetFlag(FLAGS_lease_with_report);
      int empty_polls = 0;
      std::vector<bitsweep::v1::LeasedTrial> leased;
      while (empty_polls < 20) {  // 20 empty long polls of 100 ms: the queue stayed empty
        if (leased.empty()) {
          bitsweep::v1::LeaseRequest lease;
          lease.set_worker_id(registered.worker_id());
          lease.set_wait_ms(100);
          lease.set_max_trials(batch);
          bitsweep::v1::LeaseResponse response;
          grpc::ClientContext lc;
          if (!stub->Lease(&lc, lease, &response).ok()) break;
          if (response.trials().empty()) {
            ++empty_polls;
            continue;
          }
          leased.assign(response.trials().begin(), response.trials().end());
        }
        empty_polls = 0;
        std::vector<bitsweep::v1::LeasedTrial> next;
        for (size_t i = 0; i < leased.size(); ++i) {
          const bitsweep::v1::LeasedTrial& t = leased[i];
          bitsweep::v1::ReportRequest report;
          report.set_worker_id(registered.worker_id());
          report.set_trial_id(t.trial_id());
          report.set_lease_id(t.lease_id());
          if (lease_with_report && i + 1 == leased.size()) report.set_lease_next(batch);
          *report.mutable_result() = SyntheticResult(t);
          bitsweep::v1::ReportResponse ack;
          grpc::ClientContext pc;
          if (!stub->Report(&pc, report, &ack).ok()) continue;
          ++round_trips;
          next.assign(ack.next().begin(), ack.next().end());
        }
        leased = std::move(next);
      }
      ++idle_workers;
    });
  }
  int64_t at_one_second = -1;
  Clock::time_point one_second;
  while (idle_workers.load() < workers) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (at_one_second < 0 && Clock::now() - start >= std::chrono::seconds(1)) {
      at_one_second = round_trips.load();
      one_second = Clock::now();
    }
  }
  for (auto& t : threads) t.join();
  // The last 2 s were the workers' empty polls.
  const auto end = Clock::now() - std::chrono::seconds(2);
  const double seconds = std::chrono::duration<double>(end - one_second).count();
  const int64_t total = round_trips.load();
  std::printf("sweeps %d x budget %lld, %d no-op workers, %d trials per lease, %s\n", sweeps,
              static_cast<long long>(absl::GetFlag(FLAGS_budget)), workers,
              absl::GetFlag(FLAGS_lease_batch),
              absl::GetFlag(FLAGS_lease_with_report) ? "leased with the previous report"
                                                     : "leased by separate Lease calls");
  std::printf("lease+report round trips: %lld in total, %.0f per second (after the first second)\n",
              static_cast<long long>(total), (total - std::max<int64_t>(at_one_second, 0)) / seconds);
  bitsweep::v1::ListSweepsRequest list;
  auto listed = (*client)->ListSweeps(list);
  int64_t stored = 0;
  if (listed.ok()) {
    for (const auto& s : listed->sweeps()) stored += s.trials_total();
  }
  std::printf("stored trials: %lld\n", static_cast<long long>(stored));
  // Exercise the read paths on the big database before reading the peak.
  if (listed.ok() && !listed->sweeps().empty()) {
    bitsweep::v1::GetFrontierRequest f;
    f.set_sweep_id(listed->sweeps(0).id());
    auto frontier = (*client)->GetFrontier(f);
    std::printf("frontier of sweep %lld: %d points\n",
                static_cast<long long>(f.sweep_id()), frontier.ok() ? frontier->points_size() : -1);
  }
  std::printf("coordinator peak RSS (VmHWM):%s\n", ReadStatusField(coordinator.pid(), "VmHWM:").c_str());
  std::printf("coordinator RSS now (VmRSS):%s\n", ReadStatusField(coordinator.pid(), "VmRSS:").c_str());
  return 0;
}
