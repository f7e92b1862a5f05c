// Coordinator capacity: lease + report round trips per second from no-op workers on loopback,
// and the coordinator's peak RSS once it holds many stored trials.
//
//   build/bench/service/coordinator_bench [--sweeps 10] [--budget 10000] [--workers 4]
//                                         [--transport grpc|in_process]
//
// Starts a real bitsweep-coordinator process on a temporary database (or, with
// --transport=in_process, opens the Coordinator class in this process: the same work without
// gRPC), submits `sweeps` random sweeps of `budget` configs each on LeNet-5, and lets `workers`
// threads lease and report synthetic results as fast as the coordinator allows, the way the
// real worker calls: a trial's report leases the next one, Lease (long poll) only when that
// brought nothing. Prints the round trips per second (excluding the first second, which
// includes planning the first stages) and the coordinator's VmHWM from /proc.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "bitsweep/v1/worker.grpc.pb.h"
#include "client/explorer_client.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/grpc_status.h"
#include "grpcpp/grpcpp.h"
#include "server/coordinator/coordinator.h"
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
ABSL_FLAG(std::string, transport, "grpc",
          "grpc: a real coordinator process on loopback; in_process: the Coordinator class in "
          "this process, no gRPC (what the coordinator's own work costs)");
ABSL_FLAG(bool, channel_per_worker, false,
          "give every no-op worker its own gRPC channel (own connection), as separate worker "
          "processes have; default: all share one channel");

namespace {

namespace v1 = bitsweep::v1;
using Clock = std::chrono::steady_clock;

// What a no-op worker calls, over gRPC or in process.
class WorkerCalls {
 public:
  virtual ~WorkerCalls() = default;
  virtual absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& r) = 0;
  virtual absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& r) = 0;
  virtual absl::StatusOr<v1::ReportResponse> Report(const v1::ReportRequest& r) = 0;
};

class GrpcWorkerCalls final : public WorkerCalls {
 public:
  explicit GrpcWorkerCalls(std::shared_ptr<grpc::Channel> channel)
      : stub_(v1::WorkerService::NewStub(std::move(channel))) {}
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& r) override {
    return Call(&v1::WorkerService::Stub::Register, r);
  }
  absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& r) override {
    return Call(&v1::WorkerService::Stub::Lease, r);
  }
  absl::StatusOr<v1::ReportResponse> Report(const v1::ReportRequest& r) override {
    return Call(&v1::WorkerService::Stub::Report, r);
  }

 private:
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (v1::WorkerService::Stub::*method)(
                                    grpc::ClientContext*, const Request&, Response*),
                                const Request& request) {
    grpc::ClientContext context;
    Response response;
    grpc::Status status = (stub_.get()->*method)(&context, request, &response);
    if (!status.ok()) return bitsweep::FromGrpcStatus(status);
    return response;
  }
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

class InProcessWorkerCalls final : public WorkerCalls {
 public:
  explicit InProcessWorkerCalls(bitsweep::server::Coordinator* c) : c_(c) {}
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& r) override {
    return c_->RegisterWorker(r);
  }
  absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& r) override {
    return c_->Lease(r);
  }
  absl::StatusOr<v1::ReportResponse> Report(const v1::ReportRequest& r) override {
    return c_->Report(r);
  }

 private:
  bitsweep::server::Coordinator* c_;
};

std::string ReadStatusField(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return line.substr(field.size());
  }
  return "?";
}

// A plausible result: accuracy and size fall with the config's length (a stand-in for width).
v1::TrialResult SyntheticResult(const v1::LeasedTrial& t) {
  v1::TrialResult r;
  const size_t h = std::hash<std::string>()(t.spec().config_json());
  r.set_top1(0.80 + (h % 1000) / 10000.0);
  r.set_top5(0.99);
  r.set_samples(10000);
  r.set_hardware_profile("synthetic");
  r.set_engine_version("no-op");
  // The totals are the layers' sums, as the coordinator checks (the engine's cost model).
  for (int i = 0; i < 5; ++i) {
    v1::LayerResult* layer = r.add_layers();
    layer->set_name("layer" + std::to_string(i + 1));
    layer->set_layer_class(i < 2 ? "conv" : "fc");
    layer->set_weight_count(1000 * (i + 1));
    layer->set_macs(10000 * (i + 1));
    layer->set_weight_bits(20000 * (i + 1) + static_cast<int64_t>(h % 80000));
    layer->set_bops(200000 * (i + 1) + static_cast<int64_t>(h % 200000));
    layer->set_energy_pj(2e4 + (h % 7919) * 2.0);
    layer->mutable_weights()->set_format("fp32");
    layer->mutable_weights()->set_bits(32);
    r.set_size_bits(r.size_bits() + layer->weight_bits());
    r.set_bops(r.bops() + layer->bops());
    r.set_macs(r.macs() + layer->macs());
    r.set_energy_pj(r.energy_pj() + layer->energy_pj());
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace fs = std::filesystem;
  const std::string transport = absl::GetFlag(FLAGS_transport);
  if (transport != "grpc" && transport != "in_process") {
    std::fprintf(stderr, "--transport: 'grpc' or 'in_process', got '%s'\n", transport.c_str());
    return 2;
  }
  const bool in_process = transport == "in_process";
  const fs::path dir = fs::temp_directory_path() /
                       ("bitsweep_coordinator_bench_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db_path = (dir / "bench.db").string();

  // The coordinator: a real process on loopback, or the class itself.
  std::unique_ptr<bitsweep::testing::Process> process;
  std::string address;
  std::unique_ptr<bitsweep::cli::ExplorerClient> client;
  bitsweep::RealClock clock;
  std::unique_ptr<bitsweep::server::Coordinator> coordinator;
  std::string model_hash;
  if (in_process) {
    auto opened = bitsweep::server::Coordinator::Open({.db_path = db_path, .clock = &clock});
    if (!opened.ok()) {
      std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
      return 1;
    }
    coordinator = std::move(*opened);
    auto bytes = bitsweep::ReadFileToString(BITSWEEP_LENET5_MODEL);
    auto model = bytes.ok() ? coordinator->PutModel("lenet5.onnx", *bytes, "")
                            : absl::StatusOr<v1::UploadModelResponse>(bytes.status());
    if (!model.ok()) {
      std::fprintf(stderr, "model: %s\n", model.status().ToString().c_str());
      return 1;
    }
    model_hash = model->model_hash();
  } else {
    process = std::make_unique<bitsweep::testing::Process>(
        BITSWEEP_COORDINATOR, std::vector<std::string>{"--listen=127.0.0.1:0", "--db=" + db_path},
        (dir / "coordinator.log").string());
    auto port = process->WaitForLine("listening on port ", std::chrono::seconds(30));
    if (!port) {
      std::fprintf(stderr, "coordinator did not start:\n%s\n", process->Log().c_str());
      return 1;
    }
    address = "127.0.0.1:" + port->substr(0, port->find(','));
    auto connected = bitsweep::cli::ExplorerClient::Connect(address, {});
    if (!connected.ok()) {
      std::fprintf(stderr, "connect: %s\n", connected.status().ToString().c_str());
      return 1;
    }
    client = std::move(*connected);
    auto hash = client->UploadModelFile(BITSWEEP_LENET5_MODEL);
    if (!hash.ok()) {
      std::fprintf(stderr, "upload: %s\n", std::string(hash.status().message()).c_str());
      return 1;
    }
    model_hash = *hash;
  }
  const int sweeps = absl::GetFlag(FLAGS_sweeps);
  for (int s = 0; s < sweeps; ++s) {
    v1::SweepSpec spec;
    spec.set_model_hash(model_hash);
    spec.set_strategy("random");
    spec.set_budget(absl::GetFlag(FLAGS_budget));
    spec.set_seed(s + 1);
    spec.mutable_settings()->mutable_dataset()->set_eval("idx:/nonexistent/t10k");
    for (int bits = 2; bits <= 16; ++bits) {
      spec.mutable_space()->add_weight_formats("fixed:" + std::to_string(bits));
      spec.mutable_space()->add_activation_formats("fixed:" + std::to_string(bits));
    }
    auto sweep = in_process ? coordinator->SubmitSweep(spec) : client->Submit(spec);
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
  std::shared_ptr<grpc::Channel> channel;
  if (!in_process) channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  for (int w = 0; w < workers; ++w) {
    std::unique_ptr<WorkerCalls> calls;
    if (in_process) {
      calls = std::make_unique<InProcessWorkerCalls>(coordinator.get());
    } else if (absl::GetFlag(FLAGS_channel_per_worker)) {
      grpc::ChannelArguments args;
      args.SetInt("bench_worker", w);  // distinct arguments: a channel (connection) of its own
      calls = std::make_unique<GrpcWorkerCalls>(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    } else {
      calls = std::make_unique<GrpcWorkerCalls>(channel);
    }
    threads.emplace_back([&, w, calls = std::move(calls)] {
      v1::RegisterRequest reg;
      reg.set_name("noop-" + std::to_string(w));
      auto registered = calls->Register(reg);
      if (!registered.ok()) {
        ++idle_workers;
        return;
      }
      const std::string& worker_id = registered->worker_id();
      const int batch = absl::GetFlag(FLAGS_lease_batch);
      const bool lease_with_report = absl::GetFlag(FLAGS_lease_with_report);
      int empty_polls = 0;
      std::vector<v1::LeasedTrial> leased;
      while (empty_polls < 20) {  // 20 empty long polls of 100 ms: the queue stayed empty
        if (leased.empty()) {
          v1::LeaseRequest lease;
          lease.set_worker_id(worker_id);
          lease.set_wait_ms(100);
          lease.set_max_trials(batch);
          auto response = calls->Lease(lease);
          if (!response.ok()) break;
          if (response->trials().empty()) {
            ++empty_polls;
            continue;
          }
          leased.assign(response->trials().begin(), response->trials().end());
        }
        empty_polls = 0;
        std::vector<v1::LeasedTrial> next;
        for (size_t i = 0; i < leased.size(); ++i) {
          const v1::LeasedTrial& t = leased[i];
          v1::ReportRequest report;
          report.set_worker_id(worker_id);
          report.set_trial_id(t.trial_id());
          report.set_lease_id(t.lease_id());
          if (lease_with_report && i + 1 == leased.size()) report.set_lease_next(batch);
          *report.mutable_result() = SyntheticResult(t);
          auto ack = calls->Report(report);
          if (!ack.ok()) continue;
          ++round_trips;
          next.assign(ack->next().begin(), ack->next().end());
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
  std::printf("sweeps %d x budget %lld, %d no-op workers (%s), %d trials per lease, %s\n", sweeps,
              static_cast<long long>(absl::GetFlag(FLAGS_budget)), workers, transport.c_str(),
              absl::GetFlag(FLAGS_lease_batch),
              absl::GetFlag(FLAGS_lease_with_report) ? "leased with the previous report"
                                                     : "leased by separate Lease calls");
  std::printf("lease+report round trips: %lld in total, %.0f per second (after the first second)\n",
              static_cast<long long>(total), (total - std::max<int64_t>(at_one_second, 0)) / seconds);
  auto listed = in_process ? coordinator->ListSweeps(v1::ListSweepsRequest())
                           : client->ListSweeps(v1::ListSweepsRequest());
  int64_t stored = 0;
  if (listed.ok()) {
    for (const auto& s : listed->sweeps()) stored += s.trials_total();
  }
  std::printf("stored trials: %lld\n", static_cast<long long>(stored));
  // Exercise the read paths on the big database before reading the peak.
  if (listed.ok() && !listed->sweeps().empty()) {
    v1::GetFrontierRequest f;
    f.set_sweep_id(listed->sweeps(0).id());
    auto frontier = in_process ? coordinator->GetFrontier(f) : client->GetFrontier(f);
    std::printf("frontier of sweep %lld: %d points\n",
                static_cast<long long>(f.sweep_id()), frontier.ok() ? frontier->points_size() : -1);
  }
  const int pid = in_process ? getpid() : process->pid();
  std::printf("coordinator peak RSS (VmHWM):%s\n", ReadStatusField(pid, "VmHWM:").c_str());
  std::printf("coordinator RSS now (VmRSS):%s\n", ReadStatusField(pid, "VmRSS:").c_str());
  coordinator.reset();
  process.reset();
  fs::remove_all(dir);
  return 0;
}
