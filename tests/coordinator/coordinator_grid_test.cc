// The coordinator with the real "grid" strategy from bitsweep_planner: baseline, then the
// Cartesian product of the axes, then done; results flow into the frontier and the export.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/coordinator/coordinator.h"
#include "tests/coordinator/test_util.h"

namespace bitsweep::server {
namespace {

using ::testing::HasSubstr;
using testing::MakeResult;
using testing::TempDbPath;
using testing::TinyOnnxModel;

class GridSweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    options.db_path = TempDbPath("grid");
    options.clock = &clock_;  // strategy_factory: the default, MakeStrategy
    absl::StatusOr<std::unique_ptr<Coordinator>> opened = Coordinator::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    coordinator_ = std::move(*opened);
    absl::StatusOr<v1::UploadModelResponse> model =
        coordinator_->PutModel("tiny.onnx", TinyOnnxModel(), "");
    ASSERT_TRUE(model.ok()) << model.status();
    model_hash_ = model->model_hash();
    absl::StatusOr<v1::RegisterResponse> worker = coordinator_->RegisterWorker({});
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = worker->worker_id();
  }

  v1::SweepSpec GridSpec() {
    v1::SweepSpec spec;
    spec.set_name("grid");
    spec.set_model_hash(model_hash_);
    spec.set_strategy("grid");
    spec.mutable_settings()->mutable_dataset()->set_eval("idx:/data/t10k");
    v1::GridAxis* conv = spec.mutable_space()->add_axes();
    conv->set_selector("conv");
    conv->set_role("weights");
    conv->add_formats("fixed:8");
    conv->add_formats("fixed:4");
    v1::GridAxis* fc = spec.mutable_space()->add_axes();
    fc->set_selector("fc");
    fc->set_role("weights");
    fc->add_formats("fixed:8");
    return spec;
  }

  std::vector<v1::LeasedTrial> Lease(int n) {
    v1::LeaseRequest request;
    request.set_worker_id(worker_);
    request.set_max_trials(n);
    absl::StatusOr<v1::LeaseResponse> response = coordinator_->Lease(request);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return {};
    return {response->trials().begin(), response->trials().end()};
  }

  bool Report(const v1::LeasedTrial& leased, const v1::TrialResult& result) {
    v1::ReportRequest request;
    request.set_worker_id(worker_);
    request.set_trial_id(leased.trial_id());
    request.set_lease_id(leased.lease_id());
    *request.mutable_result() = result;
    absl::StatusOr<v1::ReportResponse> response = coordinator_->Report(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() && response->accepted();
  }

  FakeClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
  std::string model_hash_;
  std::string worker_;
};

TEST_F(GridSweepTest, BaselineThenTheProductThenDone) {
  absl::StatusOr<v1::Sweep> submitted = coordinator_->SubmitSweep(GridSpec());
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  EXPECT_EQ(submitted->stage(), "baseline");
  std::vector<v1::LeasedTrial> baseline = Lease(5);
  ASSERT_EQ(baseline.size(), 1u);
  EXPECT_TRUE(baseline[0].spec().collect_ranges());
  ASSERT_TRUE(Report(baseline[0], MakeResult(0.91, 32000)));

  absl::StatusOr<v1::Sweep> sweep = coordinator_->GetSweep(submitted->id());
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(sweep->stage(), "grid");
  EXPECT_EQ(sweep->trials_queued(), 2);
  EXPECT_DOUBLE_EQ(sweep->baseline_top1(), 0.91);

  std::vector<v1::LeasedTrial> grid = Lease(5);
  ASSERT_EQ(grid.size(), 2u);
  for (const v1::LeasedTrial& trial : grid) EXPECT_EQ(trial.spec().stage(), "grid");
  ASSERT_TRUE(Report(grid[0], MakeResult(0.905, 9000)));
  ASSERT_TRUE(Report(grid[1], MakeResult(0.90, 6000)));

  sweep = coordinator_->GetSweep(submitted->id());
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(sweep->state(), v1::SWEEP_SUCCEEDED);
  EXPECT_EQ(sweep->trials_succeeded(), 3);
  EXPECT_EQ(sweep->best_trial_id(), grid[1].trial_id());

  v1::GetFrontierRequest frontier_request;
  frontier_request.set_sweep_id(submitted->id());
  absl::StatusOr<v1::Frontier> frontier = coordinator_->GetFrontier(frontier_request);
  ASSERT_TRUE(frontier.ok()) << frontier.status();
  EXPECT_EQ(frontier->points_size(), 3);

  v1::ExportConfigRequest export_request;
  export_request.set_trial_id(grid[1].trial_id());
  absl::StatusOr<v1::ExportConfigResponse> exported = coordinator_->ExportConfig(export_request);
  ASSERT_TRUE(exported.ok()) << exported.status();
  nlohmann::json manifest = nlohmann::json::parse(exported->manifest_json());
  EXPECT_TRUE(manifest["config"].contains("conv")) << manifest.dump();
  EXPECT_EQ(manifest["config"]["fc"]["weights"], "fixed:8");
}

TEST_F(GridSweepTest, GridWithoutAxesIsRejected) {
  v1::SweepSpec spec = GridSpec();
  spec.mutable_space()->clear_axes();
  absl::StatusOr<v1::Sweep> sweep = coordinator_->SubmitSweep(spec);
  EXPECT_EQ(sweep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(sweep.status().message()), HasSubstr("space.axes"));
}

}  // namespace
}  // namespace bitsweep::server
