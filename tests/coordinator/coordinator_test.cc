// The coordinator domain with a scripted fake strategy and a fake clock: submit validation,
// FIFO leases, expiry and retries, idempotent reports, heartbeats, cancellation, deduplication,
// restart from the same file, planner steps, frontier, paging, export, models and metrics.
// No engine: results are hand-made TrialResult protos. No sleeping: FakeClock and wait_ms = 0.
#include "server/coordinator/coordinator.h"

#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/barrier.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "server/coordinator/dedup.h"
#include "server/coordinator/metrics.h"
#include "server/store/store.h"
#include "tests/coordinator/test_util.h"
#include "quant/config.h"

namespace bitsweep::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::FakePlans;
using testing::FakeStep;
using testing::MakeResult;
using testing::TempDbPath;
using testing::TinyOnnxModel;
using testing::WeightsConfig;

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    const absl::Status assert_ok_status_ = (expr);       \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

template <typename T>
T ValueOrDie(absl::StatusOr<T> value) {
  EXPECT_TRUE(value.ok()) << value.status();
  if (!value.ok()) return T();
  return *std::move(value);
}

const std::string kBaseline = "{}";
const std::string kFixed8 = WeightsConfig("fixed:8");
const std::string kFixed4 = WeightsConfig("fixed:4");
const std::string kFixed2 = WeightsConfig("fixed:2");
const std::string kPow2 = WeightsConfig("pow2:4");

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_path_ = TempDbPath("coord");
    Reopen();
    v1::UploadModelResponse model =
        ValueOrDie(coordinator_->PutModel("tiny.onnx", TinyOnnxModel(), ""));
    model_hash_ = model.model_hash();
    worker_ = RegisterWorker("host-a");
  }

  CoordinatorOptions Options() {
    CoordinatorOptions options;
    options.db_path = db_path_;
    options.clock = &clock_;
    options.lease_duration = absl::Seconds(60);
    options.heartbeat_interval = absl::Seconds(10);
    options.expiry_interval = absl::ZeroDuration();  // the tests expire leases themselves
    options.metrics = &registry_;
    options.strategy_factory = testing::FakeStrategyFactory(&plans_);
    return options;
  }

  void Reopen() {
    coordinator_.reset();  // closes the database first
    absl::StatusOr<std::unique_ptr<Coordinator>> opened = Coordinator::Open(Options());
    ASSERT_TRUE(opened.ok()) << opened.status();
    coordinator_ = std::move(*opened);
  }

  std::string RegisterWorker(const std::string& name) {
    v1::RegisterRequest request;
    request.set_name(name);
    request.set_threads(2);
    return ValueOrDie(coordinator_->RegisterWorker(request)).worker_id();
  }

  v1::SweepSpec Spec(const std::string& name, std::vector<FakeStep> steps) {
    plans_.Set(name, std::move(steps));
    v1::SweepSpec spec;
    spec.set_name(name);
    spec.set_model_hash(model_hash_);
    spec.set_strategy("fake");
    spec.mutable_settings()->mutable_dataset()->set_eval("idx:/data/t10k");
    spec.mutable_settings()->mutable_dataset()->set_train("idx:/data/train");
    return spec;
  }

  v1::Sweep Submit(const v1::SweepSpec& spec) {
    return ValueOrDie(coordinator_->SubmitSweep(spec));
  }

  std::vector<v1::LeasedTrial> Lease(int max_trials = 1, const std::string& worker = "") {
    v1::LeaseRequest request;
    request.set_worker_id(worker.empty() ? worker_ : worker);
    request.set_max_trials(max_trials);
    request.set_wait_ms(0);
    v1::LeaseResponse response = ValueOrDie(coordinator_->Lease(request));
    return {response.trials().begin(), response.trials().end()};
  }

  v1::LeasedTrial LeaseOne() {
    std::vector<v1::LeasedTrial> leased = Lease(1);
    EXPECT_EQ(static_cast<int>((leased).size()), 1);
    return leased.empty() ? v1::LeasedTrial() : leased[0];
  }

  absl::StatusOr<v1::ReportResponse> ReportResult(const v1::LeasedTrial& leased,
                                                  const v1::TrialResult& result,
                                                  const std::string& worker = "") {
    v1::ReportRequest request;
    request.set_worker_id(worker.empty() ? worker_ : worker);
    request.set_trial_id(leased.trial_id());
    request.set_lease_id(leased.lease_id());
    *request.mutable_result() = result;
    return coordinator_->Report(request);
  }

  absl::StatusOr<v1::ReportResponse> ReportError(const v1::LeasedTrial& leased,
                                                 const std::string& message, bool permanent) {
    v1::ReportRequest request;
    request.set_worker_id(worker_);
    request.set_trial_id(leased.trial_id());
    request.set_lease_id(leased.lease_id());
    request.mutable_error()->set_message(message);
    request.mutable_error()->set_permanent(permanent);
    return coordinator_->Report(request);
  }

  bool Accepted(absl::StatusOr<v1::ReportResponse> response) {
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() && response->accepted();
  }

  v1::HeartbeatResponse Heartbeat(const std::vector<std::string>& lease_ids) {
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_);
    for (const std::string& id : lease_ids) request.add_lease_ids(id);
    return ValueOrDie(coordinator_->Heartbeat(request));
  }

  std::vector<v1::Trial> Trials(int64_t sweep_id) {
    v1::ListTrialsRequest request;
    request.set_sweep_id(sweep_id);
    request.set_page_size(1000);
    v1::ListTrialsResponse response = ValueOrDie(coordinator_->ListTrials(request));
    return {response.trials().begin(), response.trials().end()};
  }

  v1::Trial TrialById(int64_t sweep_id, int64_t trial_id) {
    for (const v1::Trial& trial : Trials(sweep_id)) {
      if (trial.id() == trial_id) return trial;
    }
    ADD_FAILURE() << "no trial " << trial_id << " in sweep " << sweep_id;
    return v1::Trial();
  }

  v1::Sweep GetSweep(int64_t id) { return ValueOrDie(coordinator_->GetSweep(id)); }

  // Reads the database file through a second connection (WAL allows it).
  int64_t Count(const std::string& sql) {
    absl::StatusOr<std::unique_ptr<store::Database>> db = store::Database::Open(db_path_);
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return -1;
    absl::StatusOr<store::Statement> select = (*db)->Prepare(sql);
    EXPECT_TRUE(select.ok()) << select.status();
    if (!select.ok()) return -1;
    absl::StatusOr<bool> row = select->Step();
    EXPECT_TRUE(row.ok() && *row);
    return select->Int64(0);
  }

  // The value of a gauge or counter (or a histogram's sample count) with one label, or -1.
  double Metric(const std::string& name, const std::string& label = "",
                const std::string& value = "") {
    // The registry's series, then the per-sweep ones computed at scrape time.
    std::vector<prometheus::MetricFamily> families = registry_.Collect();
    for (prometheus::MetricFamily& family :
         SweepMetricsCollector(coordinator_.get(), /*keep_finished=*/5).Collect()) {
      families.push_back(std::move(family));
    }
    for (const prometheus::MetricFamily& family : families) {
      if (family.name != name) continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        bool match = label.empty();
        for (const prometheus::ClientMetric::Label& l : metric.label) {
          if (l.name == label && l.value == value) match = true;
        }
        if (!match) continue;
        switch (family.type) {
          case prometheus::MetricType::Gauge: return metric.gauge.value;
          case prometheus::MetricType::Counter: return metric.counter.value;
          case prometheus::MetricType::Histogram:
            return static_cast<double>(metric.histogram.sample_count);
          default: return -1;
        }
      }
    }
    return -1;
  }

  FakeClock clock_;
  prometheus::Registry registry_;
  FakePlans plans_;
  std::string db_path_;
  std::unique_ptr<Coordinator> coordinator_;
  std::string model_hash_;
  std::string worker_;
};

// --- Submit ---------------------------------------------------------------------------------

TEST_F(CoordinatorTest, SubmitRejectsBadSpecsNamingTheField) {
  struct Case {
    std::string what;
    std::function<void(v1::SweepSpec&)> edit;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"unknown model", [](v1::SweepSpec& s) { s.set_model_hash("abc123"); },
       absl::StatusCode::kInvalidArgument, "model_hash: no model 'abc123'"},
      {"unknown strategy", [](v1::SweepSpec& s) { s.set_strategy("annealing"); },
       absl::StatusCode::kInvalidArgument, "strategy"},
      {"no eval split", [](v1::SweepSpec& s) { s.mutable_settings()->clear_dataset(); },
       absl::StatusCode::kInvalidArgument, "settings.dataset.eval"},
      {"negative margin", [](v1::SweepSpec& s) { s.set_error_margin(-0.5); },
       absl::StatusCode::kInvalidArgument, "error_margin"},
      {"one objective", [](v1::SweepSpec& s) { s.add_objectives(v1::OBJECTIVE_TOP1); },
       absl::StatusCode::kInvalidArgument, "objectives"},
      {"negative attempts", [](v1::SweepSpec& s) { s.set_max_attempts(-1); },
       absl::StatusCode::kInvalidArgument, "max_attempts"},
      {"strategy validation", [](v1::SweepSpec& s) { s.set_name("invalid"); },
       absl::StatusCode::kInvalidArgument, "space.axes"},
      {"long name", [](v1::SweepSpec& s) { s.set_name(std::string(257, 'n')); },
       absl::StatusCode::kInvalidArgument, "name: of 257 bytes is longer than 256 bytes"},
      {"huge finetune steps",
       [](v1::SweepSpec& s) { s.mutable_finetune()->set_steps(1'000'000'000'000); },
       absl::StatusCode::kInvalidArgument,
       "finetune.steps: 1000000000000 is outside [0, 10000000]"},
      {"huge finetune batch",
       [](v1::SweepSpec& s) { s.mutable_finetune()->set_batch(1'000'000'000'000); },
       absl::StatusCode::kInvalidArgument, "finetune.batch: 1000000000000 is outside [0, 65536]"},
      {"negative batch", [](v1::SweepSpec& s) { s.mutable_settings()->set_batch(-1); },
       absl::StatusCode::kInvalidArgument, "settings.batch: -1 is outside [0, 65536]"},
      {"negative eval_limit",
       [](v1::SweepSpec& s) { s.mutable_settings()->mutable_dataset()->set_eval_limit(-5); },
       absl::StatusCode::kInvalidArgument, "settings.dataset.eval_limit: -5 is outside"},
      {"zero std",
       [](v1::SweepSpec& s) {
         s.mutable_settings()->mutable_dataset()->add_mean(0.5f);
         s.mutable_settings()->mutable_dataset()->add_std(0.0f);
       },
       absl::StatusCode::kInvalidArgument,
       "settings.dataset.std[0]: 0 is not a finite non-zero number"},
      {"mean and std counts differ",
       [](v1::SweepSpec& s) {
         auto* dataset = s.mutable_settings()->mutable_dataset();
         for (float m : {0.1f, 0.2f, 0.3f, 0.4f}) dataset->add_mean(m);
         dataset->add_std(0.5f);
       },
       absl::StatusCode::kInvalidArgument, "settings.dataset.std: has 1 values but mean has 4"},
      {"bad channel order",
       [](v1::SweepSpec& s) { s.mutable_settings()->mutable_dataset()->set_channel_order("x"); },
       absl::StatusCode::kInvalidArgument, "settings.dataset.channel_order: 'x'"},
      {"momentum of 1", [](v1::SweepSpec& s) { s.mutable_finetune()->set_momentum(1.0); },
       absl::StatusCode::kInvalidArgument, "finetune.momentum: 1 is outside [0, 1)"},
      {"NaN learning rate",
       [](v1::SweepSpec& s) { s.mutable_finetune()->set_learning_rate(std::nan("")); },
       absl::StatusCode::kInvalidArgument, "finetune.learning_rate: nan is not finite"},
      {"too many attempts", [](v1::SweepSpec& s) { s.set_max_attempts(101); },
       absl::StatusCode::kInvalidArgument, "max_attempts: 101 is outside [0, 100]"},
  };
  for (const Case& c : cases) {
    v1::SweepSpec spec = Spec("ok", {{"baseline", {kBaseline}}});
    c.edit(spec);
    absl::StatusOr<v1::Sweep> sweep = coordinator_->SubmitSweep(spec);
    ASSERT_FALSE(sweep.ok()) << c.what;
    EXPECT_EQ(sweep.status().code(), c.code) << c.what << ": " << sweep.status();
    EXPECT_THAT(std::string(sweep.status().message()), HasSubstr(c.message)) << c.what;
  }
  // A planner step with an unparsable config is the caller's error too, and nothing is stored.
  v1::SweepSpec spec = Spec("bad-config", {{"baseline", {R"({"default": {"weights": "fixd:8"}})"}}});
  absl::StatusOr<v1::Sweep> sweep = coordinator_->SubmitSweep(spec);
  ASSERT_FALSE(sweep.ok());
  EXPECT_EQ(sweep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(sweep.status().message()), HasSubstr("config_json"));
  EXPECT_THAT(std::string(sweep.status().message()), HasSubstr("fixd:8"));
  EXPECT_EQ(ValueOrDie(coordinator_->ListSweeps({})).sweeps_size(), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM trials"), 0);
}

TEST_F(CoordinatorTest, SubmitStoresTheSweepAndQueuesTheFirstStep) {
  v1::SweepSpec spec = Spec("first", {{"baseline", {kBaseline}}, {"grid", {kFixed8, kFixed4}}});
  v1::Sweep sweep = Submit(spec);
  EXPECT_GT(sweep.id(), 0);
  EXPECT_EQ(sweep.state(), v1::SWEEP_QUEUED);
  EXPECT_EQ(sweep.stage(), "baseline");
  EXPECT_EQ(sweep.trials_total(), 1);
  EXPECT_EQ(sweep.trials_queued(), 1);
  EXPECT_EQ(sweep.spec().name(), "first");
  EXPECT_EQ(sweep.created_ms(), absl::ToUnixMillis(clock_.Now()));
  EXPECT_EQ(sweep.finished_ms(), 0);
  std::vector<v1::Trial> trials = Trials(sweep.id());
  ASSERT_EQ(static_cast<int>((trials).size()), 1);
  EXPECT_EQ(trials[0].state(), v1::TRIAL_QUEUED);
  EXPECT_EQ(trials[0].spec().stage(), "baseline");
  EXPECT_EQ(trials[0].config_hash(),
            quant::ConfigHash(*quant::ParseQuantConfig(kBaseline)));
  EXPECT_EQ(Metric("bitsweep_queue_depth"), 1);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "queued"), 1);
}

// --- Leases ---------------------------------------------------------------------------------

TEST_F(CoordinatorTest, LeasesAreFifoBetweenSweeps) {
  v1::Sweep a = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}}));
  v1::Sweep b = Submit(Spec("b", {{"grid", {kFixed2, kPow2}}}));
  std::vector<v1::LeasedTrial> leased = Lease(3);
  ASSERT_EQ(static_cast<int>((leased).size()), 3);
  std::vector<v1::Trial> a_trials = Trials(a.id());
  std::vector<v1::Trial> b_trials = Trials(b.id());
  EXPECT_EQ(leased[0].trial_id(), a_trials[0].id());
  EXPECT_EQ(leased[1].trial_id(), a_trials[1].id());
  EXPECT_EQ(leased[2].trial_id(), b_trials[0].id());
  const int64_t now_ms = absl::ToUnixMillis(clock_.Now());
  for (const v1::LeasedTrial& trial : leased) {
    EXPECT_EQ(trial.attempt(), 1);
    EXPECT_EQ(trial.deadline_ms(), now_ms + 60'000);
    EXPECT_EQ(trial.model_hash(), model_hash_);
    EXPECT_EQ(trial.settings().dataset().eval(), "idx:/data/t10k");
    EXPECT_FALSE(trial.lease_id().empty());
  }
  EXPECT_EQ(leased[0].config_hash(), a_trials[0].config_hash());
  EXPECT_EQ(leased[0].spec().config_json(), kFixed8);
  EXPECT_EQ(GetSweep(a.id()).state(), v1::SWEEP_RUNNING);
  EXPECT_EQ(GetSweep(a.id()).trials_running(), 2);
  EXPECT_EQ(GetSweep(b.id()).trials_queued(), 1);
  // The last one, then nothing (wait_ms = 0 returns at once).
  EXPECT_EQ(LeaseOne().trial_id(), b_trials[1].id());
  EXPECT_EQ(static_cast<int>((Lease(5)).size()), 0);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "running"), 4);
  EXPECT_EQ(Metric("bitsweep_queue_depth"), 0);
}

TEST_F(CoordinatorTest, UnknownWorkerIsNotFound) {
  Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeaseRequest lease;
  lease.set_worker_id("w-nobody");
  absl::StatusOr<v1::LeaseResponse> leased = coordinator_->Lease(lease);
  EXPECT_EQ(leased.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(leased.status().message()), HasSubstr("register"));
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("w-nobody");
  EXPECT_EQ(coordinator_->Heartbeat(heartbeat).status().code(), absl::StatusCode::kNotFound);
  v1::LeasedTrial trial = LeaseOne();
  EXPECT_EQ(ReportResult(trial, MakeResult(0.9, 100), "w-nobody").status().code(),
            absl::StatusCode::kNotFound);
  // Nothing was stored by the refused calls.
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 0);
}

TEST_F(CoordinatorTest, ExpiredLeaseIsRequeuedAndCountsAnAttempt) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial first = LeaseOne();
  clock_.Advance(absl::Seconds(60));  // exactly at the deadline: still live
  ASSERT_OK(coordinator_->ExpireLeases());
  EXPECT_EQ(TrialById(sweep.id(), first.trial_id()).state(), v1::TRIAL_RUNNING);
  clock_.Advance(absl::Seconds(1));
  ASSERT_OK(coordinator_->ExpireLeases());
  v1::Trial trial = TrialById(sweep.id(), first.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_QUEUED);
  EXPECT_EQ(trial.attempts(), 1);
  EXPECT_EQ(Metric("bitsweep_lease_expiries_total"), 1);
  EXPECT_EQ(Metric("bitsweep_trial_retries_total", "reason", "lease_expired"), 1);
  EXPECT_EQ(Metric("bitsweep_trial_retries_total", "reason", "error"), 0);
  v1::LeasedTrial second = LeaseOne();
  EXPECT_EQ(second.trial_id(), first.trial_id());
  EXPECT_EQ(second.attempt(), 2);
  EXPECT_NE(second.lease_id(), first.lease_id());
  EXPECT_EQ(TrialById(sweep.id(), first.trial_id()).attempts(), 2);
  EXPECT_EQ(Metric("bitsweep_trial_attempts_total"), 2);
}

TEST_F(CoordinatorTest, LostLeasesFailATrialOnlyAfterTheirOwnLargerCap) {
  v1::SweepSpec spec = Spec("a", {{"grid", {kFixed8}}});
  spec.set_max_attempts(2);  // reported errors; lost leases: max(10, 3 * 2) = 10
  v1::Sweep sweep = Submit(spec);
  for (int attempt = 1; attempt <= 10; ++attempt) {
    v1::LeasedTrial leased = LeaseOne();
    EXPECT_EQ(leased.attempt(), attempt);
    EXPECT_EQ(TrialById(sweep.id(), leased.trial_id()).state(), v1::TRIAL_RUNNING);
    clock_.Advance(absl::Seconds(61));
    ASSERT_OK(coordinator_->ExpireLeases());
  }
  std::vector<v1::Trial> trials = Trials(sweep.id());
  ASSERT_EQ(static_cast<int>((trials).size()), 1);
  EXPECT_EQ(trials[0].state(), v1::TRIAL_FAILED);
  EXPECT_EQ(trials[0].error(), "lease expired 10 times");
  EXPECT_EQ(Count("SELECT lost_leases FROM trials"), 10);
  EXPECT_EQ(static_cast<int>((Lease(1)).size()), 0);
  // The only step finished: the fake planner is done, the sweep succeeded with a failed trial.
  v1::Sweep after = GetSweep(sweep.id());
  EXPECT_EQ(after.trials_failed(), 1);
  EXPECT_EQ(after.state(), v1::SWEEP_SUCCEEDED);
}

TEST_F(CoordinatorTest, TransientErrorsRetryUntilMaxAttemptsWithTheLastErrorText) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));  // max_attempts 0 means 3
  v1::LeasedTrial leased = LeaseOne();
  EXPECT_TRUE(Accepted(ReportError(leased, "out of memory", /*permanent=*/false)));
  v1::Trial trial = TrialById(sweep.id(), leased.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_QUEUED);
  EXPECT_EQ(trial.error(), "out of memory");
  leased = LeaseOne();
  EXPECT_EQ(leased.attempt(), 2);
  EXPECT_TRUE(Accepted(ReportError(leased, "disk full", /*permanent=*/false)));
  leased = LeaseOne();
  EXPECT_EQ(leased.attempt(), 3);
  clock_.Advance(absl::Seconds(61));  // the third attempt is lost: not a reported error
  ASSERT_OK(coordinator_->ExpireLeases());
  trial = TrialById(sweep.id(), leased.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_QUEUED);
  leased = LeaseOne();
  EXPECT_EQ(leased.attempt(), 4);
  EXPECT_TRUE(Accepted(ReportError(leased, "disk still full", /*permanent=*/false)));
  trial = TrialById(sweep.id(), leased.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_FAILED);  // the third reported error
  EXPECT_EQ(trial.error(), "disk still full");
  EXPECT_EQ(trial.attempts(), 4);
  EXPECT_EQ(Metric("bitsweep_reports_total", "outcome", "error"), 3);
  // Two errors and the lost third attempt queued it again; the fourth attempt's error failed it.
  EXPECT_EQ(Metric("bitsweep_trial_retries_total", "reason", "error"), 2);
  EXPECT_EQ(Metric("bitsweep_trial_retries_total", "reason", "lease_expired"), 1);
  EXPECT_EQ(Metric("bitsweep_trial_attempts_total"), 4);
}

TEST_F(CoordinatorTest, ReturnedLeasesAreQueuedAtOnceWithoutUsingAnAttempt) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}}));
  std::vector<v1::LeasedTrial> leased = Lease(2);
  ASSERT_EQ(leased.size(), 2u);
  const std::string other = RegisterWorker("host-b");
  v1::ReturnLeasesRequest request;
  request.set_worker_id(other);  // not its leases: nothing happens
  request.add_lease_ids(leased[0].lease_id());
  EXPECT_EQ(ValueOrDie(coordinator_->ReturnLeases(request)).returned_lease_ids_size(), 0);
  request.set_worker_id(worker_);
  request.add_lease_ids("no-such-lease");
  v1::ReturnLeasesResponse returned = ValueOrDie(coordinator_->ReturnLeases(request));
  EXPECT_THAT(returned.returned_lease_ids(), ElementsAre(leased[0].lease_id()));
  v1::Trial trial = TrialById(sweep.id(), leased[0].trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_QUEUED);
  EXPECT_EQ(trial.attempts(), 0);
  EXPECT_EQ(TrialById(sweep.id(), leased[1].trial_id()).state(), v1::TRIAL_RUNNING);
  // Its report afterwards is refused; the next lease is attempt 1 again.
  EXPECT_FALSE(Accepted(ReportResult(leased[0], MakeResult(0.9, 1000))));
  v1::LeasedTrial again = LeaseOne();
  EXPECT_EQ(again.trial_id(), leased[0].trial_id());
  EXPECT_EQ(again.attempt(), 1);
  EXPECT_TRUE(Accepted(ReportResult(again, MakeResult(0.9, 1000))));
}

TEST_F(CoordinatorTest, ExpiryRunsOnATimerWithoutAnyWorkerCalling) {
  CoordinatorOptions options = Options();
  options.expiry_interval = absl::Milliseconds(10);
  coordinator_.reset();
  coordinator_ = ValueOrDie(Coordinator::Open(options));
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial leased = LeaseOne();
  clock_.Advance(absl::Seconds(61));
  // No call from here on but reads: the timer alone requeues the trial.
  absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (TrialById(sweep.id(), leased.trial_id()).state() != v1::TRIAL_QUEUED &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(TrialById(sweep.id(), leased.trial_id()).state(), v1::TRIAL_QUEUED);
  EXPECT_EQ(Metric("bitsweep_lease_expiries_total"), 1);
}

TEST_F(CoordinatorTest, PermanentErrorFailsAtOnce) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}}));
  v1::LeasedTrial leased = LeaseOne();
  EXPECT_TRUE(Accepted(ReportError(leased, "unsupported operator LSTM (node lstm1)", true)));
  v1::Trial trial = TrialById(sweep.id(), leased.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_FAILED);
  EXPECT_EQ(trial.attempts(), 1);
  EXPECT_EQ(trial.error(), "unsupported operator LSTM (node lstm1)");
  // The other trial is still there to run; the failed one is not.
  std::vector<v1::LeasedTrial> next = Lease(5);
  ASSERT_EQ(static_cast<int>((next).size()), 1);
  EXPECT_NE(next[0].trial_id(), leased.trial_id());
  // Repeating the report gives the same answer and changes nothing.
  EXPECT_TRUE(Accepted(ReportError(leased, "unsupported operator LSTM (node lstm1)", true)));
  EXPECT_EQ(Metric("bitsweep_trials", "state", "failed"), 1);
}

// --- Reports --------------------------------------------------------------------------------

TEST_F(CoordinatorTest, ReportIsIdempotentPerLease) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}}));
  v1::LeasedTrial leased = LeaseOne();
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.9, 1000))));
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.5, 1))));  // a retry of the same RPC
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 1);
  v1::Trial trial = TrialById(sweep.id(), leased.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_SUCCEEDED);
  EXPECT_DOUBLE_EQ(trial.result().top1(), 0.9);  // the first report's
  EXPECT_EQ(trial.result().worker_id(), worker_);
  EXPECT_EQ(Count("SELECT count(*) FROM trial_layers"), 2);
  EXPECT_EQ(Metric("bitsweep_reports_total", "outcome", "result"), 1);
  EXPECT_EQ(Metric("bitsweep_trial_duration_seconds"), 1);
  // Every outcome exists from the start, so a rate of errors reads 0 rather than no data.
  EXPECT_EQ(Metric("bitsweep_reports_total", "outcome", "permanent_error"), 0);
  EXPECT_EQ(Metric("bitsweep_reports_total", "outcome", "refused"), 0);
  EXPECT_GE(Metric("bitsweep_store_commit_seconds"), 1);
  EXPECT_GE(Metric("bitsweep_store_lock_wait_seconds"), 1);
}

TEST_F(CoordinatorTest, ReportLeasesTheWorkersNextTrialsInTheSameCall) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}, {"next", {kFixed2}}}));
  const std::vector<v1::Trial> first_step = Trials(sweep.id());
  ASSERT_EQ(first_step.size(), 2u);
  v1::LeasedTrial first = LeaseOne();

  auto report = [&](const v1::LeasedTrial& leased, int lease_next) {
    v1::ReportRequest request;
    request.set_worker_id(worker_);
    request.set_trial_id(leased.trial_id());
    request.set_lease_id(leased.lease_id());
    request.set_lease_next(lease_next);
    *request.mutable_result() = MakeResult(0.9, 1000);
    return coordinator_->Report(request);
  };
  v1::ReportResponse response = ValueOrDie(report(first, 1));
  EXPECT_TRUE(response.accepted());
  ASSERT_EQ(response.next_size(), 1);
  const v1::LeasedTrial& second = response.next(0);
  EXPECT_EQ(second.trial_id(), first_step[1].id());
  EXPECT_EQ(second.attempt(), 1);
  EXPECT_EQ(second.deadline_ms(), absl::ToUnixMillis(clock_.Now()) + 60'000);
  EXPECT_EQ(second.spec().config_json(), kFixed4);
  EXPECT_EQ(second.model_hash(), model_hash_);
  EXPECT_EQ(TrialById(sweep.id(), second.trial_id()).state(), v1::TRIAL_RUNNING);
  EXPECT_EQ(Count(absl::StrCat("SELECT count(*) FROM leases WHERE id = '", second.lease_id(),
                               "' AND worker_id = '", worker_, "'")),
            1);

  // The report that ends the first step queues the next one, and leases it in the same call.
  response = ValueOrDie(report(second, 5));
  EXPECT_TRUE(response.accepted());
  ASSERT_EQ(response.next_size(), 1);
  const v1::LeasedTrial third = response.next(0);
  EXPECT_EQ(third.spec().config_json(), kFixed2);
  EXPECT_EQ(GetSweep(sweep.id()).trials_running(), 1);

  // A negative count is refused before anything is stored.
  EXPECT_EQ(report(third, -1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrialById(sweep.id(), third.trial_id()).state(), v1::TRIAL_RUNNING);
  // Nothing left: the last report leases nothing and the sweep is done.
  response = ValueOrDie(report(third, 1));
  EXPECT_TRUE(response.accepted());
  EXPECT_EQ(response.next_size(), 0);
  EXPECT_EQ(GetSweep(sweep.id()).state(), v1::SWEEP_SUCCEEDED);
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 3);
}

TEST_F(CoordinatorTest, FirstReportWinsEvenFromAnExpiredLease) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial stale = LeaseOne();
  clock_.Advance(absl::Seconds(61));
  ASSERT_OK(coordinator_->ExpireLeases());
  v1::LeasedTrial current = LeaseOne();
  ASSERT_EQ(current.trial_id(), stale.trial_id());
  // The slow worker finishes first: its (valid) work is stored.
  EXPECT_TRUE(Accepted(ReportResult(stale, MakeResult(0.8, 500))));
  // The second worker hears its lease is lost, and its report is refused, repeatably.
  v1::HeartbeatResponse heartbeat = Heartbeat({current.lease_id()});
  EXPECT_THAT(heartbeat.lost_lease_ids(), ElementsAre(current.lease_id()));
  EXPECT_FALSE(Accepted(ReportResult(current, MakeResult(0.7, 400))));
  EXPECT_FALSE(Accepted(ReportResult(current, MakeResult(0.7, 400))));
  EXPECT_TRUE(Accepted(ReportResult(stale, MakeResult(0.8, 500))));
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 1);
  EXPECT_DOUBLE_EQ(TrialById(sweep.id(), stale.trial_id()).result().top1(), 0.8);
  EXPECT_EQ(Metric("bitsweep_reports_total", "outcome", "refused"), 1);
}

TEST_F(CoordinatorTest, StaleTransientErrorDoesNotDisturbTheCurrentLease) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial stale = LeaseOne();
  clock_.Advance(absl::Seconds(61));
  ASSERT_OK(coordinator_->ExpireLeases());
  v1::LeasedTrial current = LeaseOne();
  // Nothing of a stale lease's transient error is stored, and the answer says so (repeatably).
  EXPECT_FALSE(Accepted(ReportError(stale, "worker shutting down", false)));
  EXPECT_FALSE(Accepted(ReportError(stale, "worker shutting down", false)));
  v1::Trial trial = TrialById(sweep.id(), current.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_RUNNING);
  EXPECT_EQ(trial.attempts(), 2);
  EXPECT_EQ(trial.error(), "");
  EXPECT_TRUE(Accepted(ReportResult(current, MakeResult(0.8, 500))));
}

TEST_F(CoordinatorTest, ForgedResultsAreRefusedAndNothingIsStored) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}}));
  v1::LeasedTrial leased = LeaseOne();
  struct Case {
    std::string name;
    std::function<void(v1::TrialResult&)> forge;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"top1 above 1", [](v1::TrialResult& r) { r.set_top1(5.0); r.set_top5(5.0); },
       "result.top1: 5 is not an accuracy in [0, 1]"},
      {"negative top1", [](v1::TrialResult& r) { r.set_top1(-1); },
       "result.top1: -1 is not an accuracy in [0, 1]"},
      {"NaN top5", [](v1::TrialResult& r) { r.set_top5(std::nan("")); },
       "result.top5: nan is not an accuracy"},
      {"top5 below top1", [](v1::TrialResult& r) { r.set_top5(0.5); },
       "result.top5: 0.5 is below top1 0.9"},
      {"negative size", [](v1::TrialResult& r) { r.set_size_bits(-100); },
       "result.size_bits: -100 is negative"},
      {"infinite energy",
       [](v1::TrialResult& r) { r.set_energy_pj(std::numeric_limits<double>::infinity()); },
       "result.energy_pj: inf is not finite"},
      {"negative layer bops", [](v1::TrialResult& r) { r.mutable_layers(1)->set_bops(-1); },
       "result.layers[1].bops: -1 is negative"},
      {"size not the layers' sum", [](v1::TrialResult& r) { r.set_size_bits(10); },
       "result.size_bits: 10 is not the sum over its layers (1000)"},
      {"bops not the layers' sum", [](v1::TrialResult& r) { r.set_bops(1); },
       "result.bops: 1 is not the sum over its layers (10000)"},
      {"energy not the layers' sum", [](v1::TrialResult& r) { r.set_energy_pj(1); },
       "result.energy_pj: 1 is not the sum over its layers (100)"},
      {"peak above every layer", [](v1::TrialResult& r) { r.set_peak_activation_bits(9999); },
       "result.peak_activation_bits: 9999 is not the largest layer's activation_bits (4096)"},
      {"repeated layer", [](v1::TrialResult& r) { r.mutable_layers(1)->set_name("conv1"); },
       "result.layers[1]: 'conv1' repeats a layer name"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::TrialResult forged = MakeResult(0.9, 1000);
    c.forge(forged);
    absl::StatusOr<v1::ReportResponse> response = ReportResult(leased, forged);
    EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(response.status().message()), HasSubstr(c.message));
  }
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM leases WHERE report_accepted IS NOT NULL"), 0);
  EXPECT_EQ(TrialById(sweep.id(), leased.trial_id()).state(), v1::TRIAL_RUNNING);
  // The honest report on the same lease still lands.
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.9, 1000))));

  // Once a result of the model is stored, its layers are the model's: others are refused.
  v1::LeasedTrial second = LeaseOne();
  v1::TrialResult other_layers = MakeResult(0.8, 800);
  other_layers.mutable_layers(1)->set_name("fc9");
  absl::StatusOr<v1::ReportResponse> response = ReportResult(second, other_layers);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("result.layers: [conv1:conv,fc9:fc] are not the model's quantizable "
                        "layers [conv1:conv,fc1:fc]"));
  v1::TrialResult one_layer = MakeResult(0.8, 800);
  one_layer.mutable_layers()->RemoveLast();
  one_layer.set_size_bits(600);
  one_layer.set_bops(6000);
  one_layer.set_macs(600);
  one_layer.set_activation_bits(4096);
  one_layer.set_energy_pj(50);
  EXPECT_EQ(ReportResult(second, one_layer).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 1);
  EXPECT_TRUE(Accepted(ReportResult(second, MakeResult(0.8, 800))));
}

TEST_F(CoordinatorTest, OnlyTheLeaseHolderMayReport) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial leased = LeaseOne();
  const std::string intruder = RegisterWorker("host-b");
  absl::StatusOr<v1::ReportResponse> hijack =
      ReportResult(leased, MakeResult(0.1, 1), intruder);
  EXPECT_EQ(hijack.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(hijack.status().message()), HasSubstr("belongs to another worker"));
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 0);
  // The holder's own report is stored, and its answer says so.
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.9, 1000))));
  EXPECT_DOUBLE_EQ(TrialById(sweep.id(), leased.trial_id()).result().top1(), 0.9);
  // A hijacked repeat after the fact is still refused, not answered from the holder's answer.
  EXPECT_EQ(ReportResult(leased, MakeResult(0.9, 1000), intruder).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, ReportWithAnotherTrialsLeaseIsRefused) {
  Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}}));
  std::vector<v1::LeasedTrial> leased = Lease(2);
  ASSERT_EQ(static_cast<int>((leased).size()), 2);
  v1::LeasedTrial mixed = leased[0];
  mixed.set_lease_id(leased[1].lease_id());
  EXPECT_FALSE(Accepted(ReportResult(mixed, MakeResult(0.9, 100))));
  v1::LeasedTrial unknown = leased[0];
  unknown.set_trial_id(999999);
  EXPECT_EQ(ReportResult(unknown, MakeResult(0.9, 100)).status().code(),
            absl::StatusCode::kNotFound);
  // Both real leases still work.
  EXPECT_TRUE(Accepted(ReportResult(leased[0], MakeResult(0.9, 100))));
  EXPECT_TRUE(Accepted(ReportResult(leased[1], MakeResult(0.9, 100))));
}

// --- Heartbeats and cancellation --------------------------------------------------------------

TEST_F(CoordinatorTest, HeartbeatExtendsLiveLeases) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial leased = LeaseOne();
  const absl::Time start = clock_.Now();
  clock_.Advance(absl::Seconds(50));
  v1::HeartbeatResponse heartbeat = Heartbeat({leased.lease_id(), "17-1-deadbeef"});
  EXPECT_EQ(heartbeat.deadline_ms(), absl::ToUnixMillis(start + absl::Seconds(110)));
  EXPECT_THAT(heartbeat.lost_lease_ids(), ElementsAre("17-1-deadbeef"));  // unknown
  EXPECT_EQ(static_cast<int>((heartbeat.cancelled_lease_ids()).size()), 0);
  clock_.Advance(absl::Seconds(50));  // 100 s after the lease: alive thanks to the heartbeat
  ASSERT_OK(coordinator_->ExpireLeases());
  EXPECT_EQ(TrialById(sweep.id(), leased.trial_id()).state(), v1::TRIAL_RUNNING);
  clock_.Advance(absl::Seconds(11));  // 111 s: past the extended deadline
  heartbeat = Heartbeat({leased.lease_id()});
  EXPECT_THAT(heartbeat.lost_lease_ids(), ElementsAre(leased.lease_id()));
  EXPECT_EQ(TrialById(sweep.id(), leased.trial_id()).state(), v1::TRIAL_QUEUED);
}

// A cancelled sweep resumed: its cancelled trial runs again (attempt 1) and the sweep ends as
// if never cancelled; the planner saw every outcome.
TEST_F(CoordinatorTest, ResumedCancelledSweepRunsItsCancelledTrialsAndSucceeds) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}}}));
  v1::LeasedTrial first = LeaseOne();
  EXPECT_TRUE(Accepted(ReportResult(first, MakeResult(0.9, 1000))));
  ASSERT_OK(coordinator_->CancelSweep(sweep.id()).status());
  EXPECT_EQ(GetSweep(sweep.id()).state(), v1::SWEEP_CANCELLED);

  v1::Sweep resumed = ValueOrDie(coordinator_->ResumeSweep(sweep.id()));
  EXPECT_EQ(resumed.state(), v1::SWEEP_RUNNING);
  EXPECT_EQ(resumed.trials_cancelled(), 0);
  EXPECT_TRUE(resumed.error().empty());
  v1::LeasedTrial again = LeaseOne();
  EXPECT_NE(again.trial_id(), first.trial_id());
  EXPECT_EQ(again.attempt(), 1);
  EXPECT_TRUE(Accepted(ReportResult(again, MakeResult(0.8, 500))));
  v1::Sweep done = GetSweep(sweep.id());
  EXPECT_EQ(done.state(), v1::SWEEP_SUCCEEDED);
  EXPECT_EQ(done.trials_succeeded(), 2);
  EXPECT_EQ(plans_.calls().back().size(), 2u);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "succeeded"), 2);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "cancelled"), 0);
}

// A failed sweep resumed: the failed trial is queued with fresh attempts (its last error still
// readable until it runs); a planner that fails again ends the sweep failed again.
TEST_F(CoordinatorTest, ResumedFailedSweepQueuesItsFailedTrialsWithFreshAttempts) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4}},
                                     {"check", {}, "too many failed trials"}}));
  v1::LeasedTrial broken = LeaseOne();
  EXPECT_TRUE(Accepted(ReportError(broken, "worker ran out of memory", /*permanent=*/true)));
  v1::LeasedTrial fine = LeaseOne();
  EXPECT_TRUE(Accepted(ReportResult(fine, MakeResult(0.9, 1000))));
  v1::Sweep failed = GetSweep(sweep.id());
  ASSERT_EQ(failed.state(), v1::SWEEP_FAILED);
  EXPECT_EQ(failed.error(), "too many failed trials");

  v1::Sweep resumed = ValueOrDie(coordinator_->ResumeSweep(sweep.id()));
  EXPECT_EQ(resumed.state(), v1::SWEEP_RUNNING);
  EXPECT_EQ(resumed.trials_failed(), 0);
  v1::Trial trial = TrialById(sweep.id(), broken.trial_id());
  EXPECT_EQ(trial.state(), v1::TRIAL_QUEUED);
  EXPECT_EQ(trial.attempts(), 0);
  EXPECT_EQ(trial.error(), "worker ran out of memory");
  v1::LeasedTrial again = LeaseOne();
  EXPECT_EQ(again.trial_id(), broken.trial_id());
  EXPECT_EQ(again.attempt(), 1);
  EXPECT_TRUE(Accepted(ReportResult(again, MakeResult(0.85, 800))));
  // The fake planner's next step fails whatever happened: failed again, both trials succeeded.
  v1::Sweep again_failed = GetSweep(sweep.id());
  EXPECT_EQ(again_failed.state(), v1::SWEEP_FAILED);
  EXPECT_EQ(again_failed.trials_succeeded(), 2);
}

TEST_F(CoordinatorTest, ResumeRefusesSweepsThatDidNotStopAndUnknownOnes) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  absl::Status running = coordinator_->ResumeSweep(sweep.id()).status();
  EXPECT_EQ(running.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(running.message().find("only a failed or cancelled sweep"), absl::string_view::npos)
      << running;
  EXPECT_EQ(coordinator_->ResumeSweep(4242).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, CancelSweepTellsWorkersAndRefusesLaterReports) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, kFixed4, kFixed2}}}));
  std::vector<v1::LeasedTrial> leased = Lease(2);
  ASSERT_EQ(static_cast<int>((leased).size()), 2);
  EXPECT_TRUE(Accepted(ReportResult(leased[0], MakeResult(0.9, 100))));
  v1::Sweep cancelled = ValueOrDie(coordinator_->CancelSweep(sweep.id()));
  EXPECT_EQ(cancelled.state(), v1::SWEEP_CANCELLED);
  EXPECT_EQ(cancelled.trials_succeeded(), 1);  // finished results stay
  EXPECT_EQ(cancelled.trials_cancelled(), 2);   // one running, one queued
  EXPECT_GT(cancelled.finished_ms(), 0);
  v1::HeartbeatResponse heartbeat = Heartbeat({leased[1].lease_id()});
  EXPECT_THAT(heartbeat.cancelled_lease_ids(), ElementsAre(leased[1].lease_id()));
  EXPECT_EQ(static_cast<int>((heartbeat.lost_lease_ids()).size()), 0);
  EXPECT_FALSE(Accepted(ReportResult(leased[1], MakeResult(0.9, 100))));
  EXPECT_FALSE(Accepted(ReportResult(leased[1], MakeResult(0.9, 100))));
  EXPECT_EQ(static_cast<int>((Lease(5)).size()), 0);
  // Cancelling again is a no-op that returns the sweep.
  EXPECT_EQ(ValueOrDie(coordinator_->CancelSweep(sweep.id())).state(), v1::SWEEP_CANCELLED);
  EXPECT_EQ(coordinator_->CancelSweep(424242).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "cancelled"), 2);
}

// --- Deduplication --------------------------------------------------------------------------

TEST_F(CoordinatorTest, IdenticalTrialsInOneSweepRunOnce) {
  // The same meaning spelled two ways: one canonical config, one dedup key.
  const std::string spelled_out = R"({"default":{"weights":"fixed:8"}, "conv": {}})";
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8, spelled_out}}}));
  std::vector<v1::LeasedTrial> leased = Lease(5);
  ASSERT_EQ(static_cast<int>((leased).size()), 1);
  std::vector<v1::Trial> trials = Trials(sweep.id());
  ASSERT_EQ(static_cast<int>((trials).size()), 2);
  EXPECT_EQ(trials[0].config_hash(), trials[1].config_hash());
  EXPECT_EQ(trials[1].state(), v1::TRIAL_QUEUED);  // waiting on trials[0]
  EXPECT_TRUE(Accepted(ReportResult(leased[0], MakeResult(0.88, 800))));
  trials = Trials(sweep.id());
  EXPECT_EQ(trials[1].state(), v1::TRIAL_SUCCEEDED);
  EXPECT_TRUE(trials[1].cached());
  EXPECT_EQ(trials[1].cached_from(), trials[0].id());
  EXPECT_DOUBLE_EQ(trials[1].result().top1(), 0.88);
  v1::Sweep after = GetSweep(sweep.id());
  EXPECT_EQ(after.trials_succeeded(), 2);
  EXPECT_EQ(after.trials_cached(), 1);
  EXPECT_EQ(after.state(), v1::SWEEP_SUCCEEDED);
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 1);
}

TEST_F(CoordinatorTest, EvaluatedTrialsAreReusedAcrossSweeps) {
  v1::Sweep first = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial leased = LeaseOne();
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.87, 800))));

  // Same model, settings and config (collect_ranges differs: not part of the key).
  v1::SweepSpec same = Spec("b", {{"grid", {kFixed8}, "", /*collect_ranges=*/true}});
  v1::Sweep second = Submit(same);
  EXPECT_EQ(second.state(), v1::SWEEP_SUCCEEDED);  // nothing to run
  EXPECT_EQ(second.trials_cached(), 1);
  std::vector<v1::Trial> trials = Trials(second.id());
  ASSERT_EQ(static_cast<int>((trials).size()), 1);
  EXPECT_TRUE(trials[0].cached());
  EXPECT_EQ(trials[0].cached_from(), leased.trial_id());
  EXPECT_DOUBLE_EQ(trials[0].result().top1(), 0.87);
  EXPECT_EQ(static_cast<int>((Lease(5)).size()), 0);

  // Spelling out a default (batch 256) keeps the key; another batch size changes it.
  v1::SweepSpec defaults_spelled = Spec("c", {{"grid", {kFixed8}}});
  defaults_spelled.mutable_settings()->set_batch(256);
  EXPECT_EQ(Submit(defaults_spelled).trials_cached(), 1);
  v1::SweepSpec other_batch = Spec("d", {{"grid", {kFixed8}}});
  other_batch.mutable_settings()->set_batch(64);
  v1::Sweep fourth = Submit(other_batch);
  EXPECT_EQ(fourth.trials_cached(), 0);
  EXPECT_EQ(fourth.trials_queued(), 1);
  // Fine-tuning changes it too.
  v1::SweepSpec finetuned = Spec("e", {{"grid", {kFixed8}}});
  v1::TrialSpec plain, tuned;
  tuned.mutable_finetune()->set_steps(10);
  EXPECT_NE(TrialDedupKey(model_hash_, finetuned.settings(), "h", plain),
            TrialDedupKey(model_hash_, finetuned.settings(), "h", tuned));
  // A sensitivities request is part of the key (with its formats); collect_ranges, stage and
  // label are not.
  v1::TrialSpec ranges = plain;
  ranges.set_collect_ranges(true);
  ranges.set_stage("baseline");
  ranges.set_label("fp32");
  EXPECT_EQ(TrialDedupKey(model_hash_, finetuned.settings(), "h", plain),
            TrialDedupKey(model_hash_, finetuned.settings(), "h", ranges));
  v1::TrialSpec sensitivities = plain;
  sensitivities.set_collect_sensitivities(true);
  sensitivities.add_sensitivity_weight_formats("fixed:4");
  v1::TrialSpec other_formats = sensitivities;
  other_formats.add_sensitivity_weight_formats("fixed:2");
  const std::string plain_key = TrialDedupKey(model_hash_, finetuned.settings(), "h", plain);
  const std::string sensitivities_key =
      TrialDedupKey(model_hash_, finetuned.settings(), "h", sensitivities);
  EXPECT_NE(plain_key, sensitivities_key);
  EXPECT_NE(sensitivities_key,
            TrialDedupKey(model_hash_, finetuned.settings(), "h", other_formats));
}

TEST_F(CoordinatorTest, InvalidatedResultIsEvaluatedAgainAndNoCacheSkipsDedup) {
  Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial leased = LeaseOne();
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.87, 800))));
  v1::Sweep cached = Submit(Spec("b", {{"grid", {kFixed8}}}));
  ASSERT_EQ(cached.trials_cached(), 1);
  const int64_t cached_trial = Trials(cached.id())[0].id();

  // Invalidating the cached copy takes back the result it came from.
  v1::InvalidateTrialResponse invalidated =
      ValueOrDie(coordinator_->InvalidateTrial(cached_trial));
  EXPECT_EQ(invalidated.evaluated_trial_id(), leased.trial_id());
  EXPECT_TRUE(invalidated.invalidated());
  EXPECT_FALSE(ValueOrDie(coordinator_->InvalidateTrial(leased.trial_id())).invalidated());
  EXPECT_EQ(Count("SELECT count(*) FROM results WHERE invalidated_ms IS NOT NULL"), 1);
  // A later identical sweep runs the config again; its fresh result is served from then on.
  v1::Sweep again = Submit(Spec("c", {{"grid", {kFixed8}}}));
  EXPECT_EQ(again.trials_cached(), 0);
  EXPECT_EQ(again.trials_queued(), 1);
  v1::LeasedTrial rerun = LeaseOne();
  EXPECT_NE(rerun.trial_id(), leased.trial_id());
  EXPECT_TRUE(Accepted(ReportResult(rerun, MakeResult(0.86, 800))));
  v1::Sweep after = Submit(Spec("d", {{"grid", {kFixed8}}}));
  EXPECT_EQ(after.trials_cached(), 1);
  EXPECT_EQ(Trials(after.id())[0].cached_from(), rerun.trial_id());

  // --no-cache: evaluated again although a valid result exists.
  v1::SweepSpec no_cache = Spec("e", {{"grid", {kFixed8}}});
  no_cache.set_no_cache(true);
  v1::Sweep fresh = Submit(no_cache);
  EXPECT_EQ(fresh.trials_cached(), 0);
  EXPECT_EQ(fresh.trials_queued(), 1);
  EXPECT_EQ(LeaseOne().trial_id(), Trials(fresh.id())[0].id());

  EXPECT_EQ(coordinator_->InvalidateTrial(999999).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(coordinator_->InvalidateTrial(Trials(fresh.id())[0].id()).status().code(),
            absl::StatusCode::kFailedPrecondition);  // running: no result yet
}

TEST_F(CoordinatorTest, TrialWaitsForAnIdenticalRunningTrialOfAnotherSweep) {
  v1::Sweep first = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial leased = LeaseOne();
  v1::Sweep second = Submit(Spec("b", {{"grid", {kFixed8}}}));
  EXPECT_EQ(second.trials_queued(), 1);
  EXPECT_EQ(static_cast<int>((Lease(5)).size()), 0);  // not run twice
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.86, 700))));
  std::vector<v1::Trial> trials = Trials(second.id());
  ASSERT_EQ(static_cast<int>((trials).size()), 1);
  EXPECT_EQ(trials[0].state(), v1::TRIAL_SUCCEEDED);
  EXPECT_TRUE(trials[0].cached());
  EXPECT_EQ(trials[0].cached_from(), leased.trial_id());
  EXPECT_EQ(GetSweep(second.id()).state(), v1::SWEEP_SUCCEEDED);
  EXPECT_EQ(GetSweep(first.id()).state(), v1::SWEEP_SUCCEEDED);
}

TEST_F(CoordinatorTest, WaitingTrialRunsItselfWhenTheOriginalIsCancelled) {
  v1::Sweep first = Submit(Spec("a", {{"grid", {kFixed8}}}));
  v1::LeasedTrial leased = LeaseOne();
  v1::Sweep second = Submit(Spec("b", {{"grid", {kFixed8}}}));
  ASSERT_OK(coordinator_->CancelSweep(first.id()).status());
  std::vector<v1::LeasedTrial> now_leased = Lease(5);
  ASSERT_EQ(static_cast<int>((now_leased).size()), 1);
  EXPECT_EQ(now_leased[0].trial_id(), Trials(second.id())[0].id());
  EXPECT_TRUE(Accepted(ReportResult(now_leased[0], MakeResult(0.86, 700))));
  EXPECT_FALSE(Accepted(ReportResult(leased, MakeResult(0.86, 700))));
  EXPECT_FALSE(Trials(second.id())[0].cached());
}

// --- Planner steps --------------------------------------------------------------------------

TEST_F(CoordinatorTest, FinishedStepQueuesTheNextAndTheSweepSucceeds) {
  v1::SweepSpec spec = Spec("a", {{"baseline", {kBaseline}, "", /*collect_ranges=*/true},
                                  {"grid", {kFixed8, kFixed4, kFixed2}}});
  spec.set_error_margin(2.0);
  v1::Sweep sweep = Submit(spec);
  v1::LeasedTrial baseline = LeaseOne();
  EXPECT_TRUE(baseline.spec().collect_ranges());
  v1::TrialResult baseline_result = MakeResult(0.90, 32000);
  baseline_result.mutable_layers(0)->mutable_input_range()->set_min(-1.5f);
  baseline_result.mutable_layers(0)->mutable_input_range()->set_max(2.5f);
  baseline_result.mutable_layers(0)->mutable_input_range()->set_count(1000);
  baseline_result.mutable_layers(0)->mutable_output_range()->set_min(0.0f);
  baseline_result.mutable_layers(0)->mutable_output_range()->set_max(6.0f);
  baseline_result.mutable_layers(0)->mutable_output_range()->set_count(1000);
  EXPECT_TRUE(Accepted(ReportResult(baseline, baseline_result)));

  v1::Sweep running = GetSweep(sweep.id());
  EXPECT_EQ(running.stage(), "grid");
  EXPECT_THAT(running.finished_stages(), ElementsAre("baseline"));
  EXPECT_DOUBLE_EQ(running.baseline_top1(), 0.90);
  EXPECT_EQ(running.trials_total(), 4);
  EXPECT_EQ(running.trials_queued(), 3);
  EXPECT_EQ(running.best_trial_id(), baseline.trial_id());
  EXPECT_EQ(Count("SELECT count(*) FROM calibration_stats WHERE layer = 'conv1' "
                  "AND input_min = -1.5 AND output_max = 6.0 AND dataset = 'idx:/data/train' "
                  "AND calibration_samples = 1000"),
            1);

  std::vector<v1::LeasedTrial> grid = Lease(3);
  ASSERT_EQ(static_cast<int>((grid).size()), 3);
  EXPECT_EQ(grid[0].spec().stage(), "grid");
  clock_.Advance(absl::Seconds(5));
  EXPECT_TRUE(Accepted(ReportResult(grid[0], MakeResult(0.89, 8000))));   // within 2 pp
  EXPECT_TRUE(Accepted(ReportResult(grid[1], MakeResult(0.885, 4000))));  // within, smaller
  EXPECT_EQ(GetSweep(sweep.id()).state(), v1::SWEEP_RUNNING);
  EXPECT_TRUE(Accepted(ReportResult(grid[2], MakeResult(0.50, 2000))));   // outside the margin

  v1::Sweep done = GetSweep(sweep.id());
  EXPECT_EQ(done.state(), v1::SWEEP_SUCCEEDED);
  EXPECT_THAT(done.finished_stages(), ElementsAre("baseline", "grid"));
  EXPECT_EQ(done.trials_succeeded(), 4);
  EXPECT_EQ(done.best_trial_id(), grid[1].trial_id());
  EXPECT_DOUBLE_EQ(done.best_top1(), 0.885);
  EXPECT_EQ(done.best_size_bits(), 4000);
  EXPECT_EQ(done.finished_ms(), absl::ToUnixMillis(clock_.Now()));

  // The planner saw the outcomes in trial id order, with results: once at submit (none), once
  // after the baseline, once after the grid.
  std::vector<std::vector<TrialOutcome>> calls = plans_.calls();
  ASSERT_EQ(static_cast<int>((calls).size()), 3);
  EXPECT_EQ(static_cast<int>((calls[0]).size()), 0);
  ASSERT_EQ(static_cast<int>((calls[1]).size()), 1);
  EXPECT_TRUE(calls[1][0].succeeded);
  EXPECT_EQ(calls[1][0].spec.stage(), "baseline");
  ASSERT_EQ(static_cast<int>((calls[2]).size()), 4);
  for (size_t i = 1; i < calls[2].size(); ++i) {
    EXPECT_LT(calls[2][i - 1].trial_id, calls[2][i].trial_id);
  }
  EXPECT_DOUBLE_EQ(calls[2][2].result.top1(), 0.885);
  EXPECT_EQ(Metric("bitsweep_stage_duration_seconds"), 2);
  const std::string id = std::to_string(sweep.id());
  // "Highest" is the largest top-1; "best" the smallest trial within the margin, as in the CLI.
  EXPECT_EQ(Metric("bitsweep_sweep_highest_top1_ratio", "sweep", id), 0.90);
  EXPECT_EQ(Metric("bitsweep_sweep_best_top1_ratio", "sweep", id), 0.885);
  EXPECT_EQ(Metric("bitsweep_sweep_best_size_bytes", "sweep", id), 4000 / 8);
  EXPECT_EQ(Metric("bitsweep_sweep_baseline_top1_ratio", "sweep", id), 0.90);
  EXPECT_EQ(Metric("bitsweep_sweep_progress_ratio", "sweep", id), 1);
  EXPECT_EQ(Metric("bitsweep_sweep_eta_seconds", "sweep", id), 0);
  EXPECT_EQ(Metric("bitsweep_sweep_trials", "state", "succeeded"), 4);
  // Frontier (top1, size): baseline, 0.89@8000, 0.885@4000, 0.50@2000 are all non-dominated.
  EXPECT_EQ(Metric("bitsweep_sweep_frontier_size", "sweep", id), 4);
}

TEST_F(CoordinatorTest, PerSweepSeriesCoverRunningSweepsAndTheLastFinishedOnes) {
  std::vector<int64_t> ids;
  const std::string configs[] = {kFixed8, kFixed4, kFixed2};
  for (int i = 0; i < 3; ++i) {  // three sweeps of one trial each, finished in turn
    ids.push_back(Submit(Spec("s" + std::to_string(i), {{"grid", {configs[i]}}})).id());
    EXPECT_TRUE(Accepted(ReportResult(LeaseOne(), MakeResult(0.9 - 0.1 * i, 100, 50.0 + i))));
    EXPECT_EQ(GetSweep(ids.back()).state(), v1::SWEEP_SUCCEEDED);
  }
  const int64_t running = Submit(Spec("r", {{"grid", {kPow2, kBaseline}}})).id();
  SweepMetricsCollector collector(coordinator_.get(), /*keep_finished=*/1);
  std::map<std::string, std::map<std::string, double>> seen;  // family -> sweep -> value
  for (const prometheus::MetricFamily& family : collector.Collect()) {
    for (const prometheus::ClientMetric& metric : family.metric) {
      std::string sweep, state;
      for (const auto& label : metric.label) {
        if (label.name == "sweep") sweep = label.value;
        if (label.name == "state") state = label.value;
      }
      if (family.name == "bitsweep_sweep_trials" && state != "queued") continue;
      seen[family.name][sweep] = metric.gauge.value;
    }
  }
  // The running sweep and the newest finished one; the two older ones are gone.
  const std::string last = std::to_string(ids[2]), live = std::to_string(running);
  EXPECT_EQ(seen["bitsweep_sweep_info"].size(), 2u);
  EXPECT_EQ(seen["bitsweep_sweep_info"].count(last), 1u);
  EXPECT_EQ(seen["bitsweep_sweep_info"].count(live), 1u);
  EXPECT_EQ(seen["bitsweep_sweep_trials"][live], 2);  // queued
  EXPECT_EQ(seen["bitsweep_sweep_progress_ratio"][live], 0);
  EXPECT_DOUBLE_EQ(seen["bitsweep_sweep_highest_top1_ratio"][last], 0.7);
  EXPECT_EQ(seen["bitsweep_sweep_frontier_size"][last], 1);
  // No baseline stage: nothing is "within the margin", so no best size or energy yet.
  EXPECT_EQ(seen["bitsweep_sweep_best_size_bytes"].count(last), 0u);
  EXPECT_EQ(seen["bitsweep_sweep_best_energy_joules"].count(last), 0u);
}

TEST_F(CoordinatorTest, PlannerFailureFailsTheSweep) {
  v1::Sweep sweep = Submit(Spec("a", {{"baseline", {kBaseline}},
                                      {"", {}, "baseline failed: out of memory"}}));
  v1::LeasedTrial leased = LeaseOne();
  EXPECT_TRUE(Accepted(ReportError(leased, "out of memory", /*permanent=*/true)));
  v1::Sweep failed = GetSweep(sweep.id());
  EXPECT_EQ(failed.state(), v1::SWEEP_FAILED);
  EXPECT_EQ(failed.error(), "baseline failed: out of memory");
  EXPECT_GT(failed.finished_ms(), 0);
}

TEST_F(CoordinatorTest, StepWhoseTrialsAreAllCachedAdvancesAtOnce) {
  // Sweep a evaluates fixed:8; sweep b's first step is only fixed:8 (cached), so its second step
  // is queued right at submit.
  Submit(Spec("a", {{"grid", {kFixed8}}}));
  EXPECT_TRUE(Accepted(ReportResult(LeaseOne(), MakeResult(0.9, 100))));
  v1::Sweep b = Submit(Spec("b", {{"one", {kFixed8}}, {"two", {kFixed4}}}));
  EXPECT_EQ(b.stage(), "two");
  EXPECT_THAT(b.finished_stages(), ElementsAre("one"));
  EXPECT_EQ(b.trials_cached(), 1);
  EXPECT_EQ(b.trials_queued(), 1);
}

// --- Restart --------------------------------------------------------------------------------

TEST_F(CoordinatorTest, ReopenedCoordinatorResumesFromTheSameFile) {
  v1::Sweep sweep = Submit(Spec("a", {{"baseline", {kBaseline}}, {"grid", {kFixed8, kFixed4}}}));
  v1::LeasedTrial baseline = LeaseOne();
  Reopen();  // the process died and came back
  // The lease is still live: the worker keeps heartbeating and reports.
  v1::HeartbeatResponse heartbeat = Heartbeat({baseline.lease_id()});
  EXPECT_EQ(static_cast<int>((heartbeat.lost_lease_ids()).size()), 0);
  EXPECT_TRUE(Accepted(ReportResult(baseline, MakeResult(0.9, 32000))));
  v1::Sweep resumed = GetSweep(sweep.id());
  EXPECT_EQ(resumed.stage(), "grid");
  EXPECT_EQ(resumed.trials_queued(), 2);
  std::vector<v1::LeasedTrial> grid = Lease(2);
  ASSERT_EQ(static_cast<int>((grid).size()), 2);
  Reopen();
  // Metrics were rebuilt from the database.
  EXPECT_EQ(Metric("bitsweep_trials", "state", "running"), 2);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "succeeded"), 1);
  clock_.Advance(absl::Seconds(61));  // leases handed out before the restart still expire
  ASSERT_OK(coordinator_->ExpireLeases());
  EXPECT_EQ(GetSweep(sweep.id()).trials_queued(), 2);
  EXPECT_TRUE(Accepted(ReportResult(grid[0], MakeResult(0.8, 8000))));  // stale but first
  EXPECT_TRUE(Accepted(ReportResult(grid[0], MakeResult(0.8, 8000))));  // and idempotent
  for (const v1::LeasedTrial& leased : Lease(5)) {
    EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.7, 4000))));
  }
  v1::Sweep done = GetSweep(sweep.id());
  EXPECT_EQ(done.state(), v1::SWEEP_SUCCEEDED);
  EXPECT_EQ(done.trials_succeeded(), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM results"), 3);
}

// --- Queries --------------------------------------------------------------------------------

class QueryTest : public CoordinatorTest {
 protected:
  // baseline 0.90 @ 32000; grid: 0.895 @ 8000, 0.89 @ 9000 (dominated), 0.80 @ 2000,
  // 0.70 @ 4000 (dominated); margin 1 pp.
  void SetUp() override {
    CoordinatorTest::SetUp();
    sweep_ = Submit(Spec("q", {{"baseline", {kBaseline}},
                               {"grid", {kFixed8, WeightsConfig("fixed:7"), kFixed4,
                                         kFixed2}}}));
    baseline_ = LeaseOne();
    ASSERT_TRUE(Accepted(ReportResult(baseline_, MakeResult(0.90, 32000))));
    grid_ = Lease(4);
    ASSERT_EQ(static_cast<int>((grid_).size()), 4);
    ASSERT_TRUE(Accepted(ReportResult(grid_[0], MakeResult(0.895, 8000, 50))));
    ASSERT_TRUE(Accepted(ReportResult(grid_[1], MakeResult(0.89, 9000, 60))));
    ASSERT_TRUE(Accepted(ReportResult(grid_[2], MakeResult(0.80, 2000, 10))));
    // grid_[3] stays running.
  }
  v1::Sweep sweep_;
  v1::LeasedTrial baseline_;
  std::vector<v1::LeasedTrial> grid_;
};

TEST_F(QueryTest, FrontierOfTheSweep) {
  v1::GetFrontierRequest request;
  request.set_sweep_id(sweep_.id());
  v1::Frontier frontier = ValueOrDie(coordinator_->GetFrontier(request));
  ASSERT_THAT(frontier.objectives(), ElementsAre(v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE));
  std::vector<int64_t> ids;
  for (const v1::FrontierPoint& point : frontier.points()) ids.push_back(point.trial_id());
  EXPECT_THAT(ids, ElementsAre(baseline_.trial_id(), grid_[0].trial_id(), grid_[2].trial_id()));
  EXPECT_DOUBLE_EQ(frontier.baseline_top1(), 0.90);
  EXPECT_DOUBLE_EQ(frontier.error_margin(), 1.0);
  EXPECT_TRUE(frontier.has_hypervolume());
  // Points carry the full spec and result (layers included).
  EXPECT_EQ(frontier.points(1).spec().config_json(), kFixed8);
  EXPECT_EQ(frontier.points(1).result().layers_size(), 2);
  EXPECT_TRUE(frontier.points(1).within_margin());
  EXPECT_FALSE(frontier.points(2).within_margin());

  request.set_within_margin_only(true);
  frontier = ValueOrDie(coordinator_->GetFrontier(request));
  ids.clear();
  for (const v1::FrontierPoint& point : frontier.points()) ids.push_back(point.trial_id());
  EXPECT_THAT(ids, ElementsAre(baseline_.trial_id(), grid_[0].trial_id()));

  request.set_within_margin_only(false);
  request.add_objectives(v1::OBJECTIVE_TOP1);
  request.add_objectives(v1::OBJECTIVE_ENERGY);
  frontier = ValueOrDie(coordinator_->GetFrontier(request));
  EXPECT_THAT(frontier.objectives(), ElementsAre(v1::OBJECTIVE_TOP1, v1::OBJECTIVE_ENERGY));

  v1::GetFrontierRequest one;
  one.set_sweep_id(sweep_.id());
  one.add_objectives(v1::OBJECTIVE_SIZE);
  absl::StatusOr<v1::Frontier> bad = coordinator_->GetFrontier(one);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("objectives"));
  v1::GetFrontierRequest unknown;
  unknown.set_sweep_id(777);
  EXPECT_EQ(coordinator_->GetFrontier(unknown).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(QueryTest, SqlViewsAgreeWithTheApi) {
  EXPECT_EQ(Count("SELECT count(*) FROM frontier_top1_size"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM trial_summary WHERE within_margin = 1"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM trial_summary WHERE state = 'running'"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM trial_summary WHERE layers = "
                  "'conv1 w=fixed:8 in=fixed:8 out=-; fc1 w=int:8:asym:tensor in=- out=pow2:4'"),
            4);
  EXPECT_EQ(Count("SELECT succeeded FROM sweep_progress"), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM trial_layer_formats WHERE weights_fractional_bits = 5"),
            4);
}

TEST_F(QueryTest, ListTrialsFiltersAndPages) {
  v1::ListTrialsRequest request;
  request.set_sweep_id(sweep_.id());
  request.set_page_size(2);
  std::vector<int64_t> ids;
  int pages = 0;
  do {
    v1::ListTrialsResponse page = ValueOrDie(coordinator_->ListTrials(request));
    EXPECT_LE(page.trials_size(), 2);
    for (const v1::Trial& trial : page.trials()) ids.push_back(trial.id());
    request.set_page_token(page.next_page_token());
    ++pages;
  } while (!request.page_token().empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(static_cast<int>((ids).size()), 5);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));

  v1::ListTrialsRequest running;
  running.set_sweep_id(sweep_.id());
  running.set_state(v1::TRIAL_RUNNING);
  v1::ListTrialsResponse response = ValueOrDie(coordinator_->ListTrials(running));
  ASSERT_EQ(response.trials_size(), 1);
  EXPECT_EQ(response.trials(0).id(), grid_[3].trial_id());
  EXPECT_TRUE(response.next_page_token().empty());

  v1::ListTrialsRequest by_stage;
  by_stage.set_sweep_id(sweep_.id());
  by_stage.set_stage("baseline");
  EXPECT_EQ(ValueOrDie(coordinator_->ListTrials(by_stage)).trials_size(), 1);

  v1::ListTrialsRequest within;
  within.set_sweep_id(sweep_.id());
  within.set_within_margin_only(true);
  response = ValueOrDie(coordinator_->ListTrials(within));
  ASSERT_EQ(response.trials_size(), 3);
  for (const v1::Trial& trial : response.trials()) EXPECT_TRUE(trial.within_margin());

  v1::ListTrialsRequest bad_token;
  bad_token.set_sweep_id(sweep_.id());
  bad_token.set_page_token("abc");
  EXPECT_EQ(coordinator_->ListTrials(bad_token).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::ListTrialsRequest unknown;
  unknown.set_sweep_id(555);
  EXPECT_EQ(coordinator_->ListTrials(unknown).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(QueryTest, ListSweepsNewestFirstWithPaging) {
  Submit(Spec("q2", {{"grid", {kPow2}}}));
  Submit(Spec("q3", {{"grid", {WeightsConfig("fixed:3")}}}));
  v1::ListSweepsRequest request;
  request.set_page_size(2);
  v1::ListSweepsResponse first = ValueOrDie(coordinator_->ListSweeps(request));
  ASSERT_EQ(first.sweeps_size(), 2);
  EXPECT_EQ(first.sweeps(0).spec().name(), "q3");
  EXPECT_EQ(first.sweeps(1).spec().name(), "q2");
  ASSERT_FALSE(first.next_page_token().empty());
  request.set_page_token(first.next_page_token());
  v1::ListSweepsResponse second = ValueOrDie(coordinator_->ListSweeps(request));
  ASSERT_EQ(second.sweeps_size(), 1);
  EXPECT_EQ(second.sweeps(0).spec().name(), "q");
  EXPECT_TRUE(second.next_page_token().empty());
}

// Pages end by bytes too: ten sweeps carrying 1 MiB hardware profiles (the largest a spec may
// carry) come in pages of at most 8 MiB plus one sweep, all of them exactly once, newest first.
TEST_F(QueryTest, ListSweepsPagesStayBoundedInBytes) {
  const std::string profile = "{}" + std::string((1 << 20) - 2, ' ');
  for (int i = 0; i < 10; ++i) {
    v1::SweepSpec spec = Spec(absl::StrCat("big", i), {{"grid", {kPow2}}});
    spec.mutable_settings()->set_hardware_profile_json(profile);
    Submit(spec);
  }
  v1::ListSweepsRequest request;
  request.set_page_size(1000);
  std::vector<std::string> names;
  int pages = 0;
  do {
    v1::ListSweepsResponse page = ValueOrDie(coordinator_->ListSweeps(request));
    EXPECT_LE(page.ByteSizeLong(), size_t{9} << 20) << "page " << pages;
    for (const v1::Sweep& sweep : page.sweeps()) names.push_back(sweep.spec().name());
    request.set_page_token(page.next_page_token());
    ++pages;
  } while (!request.page_token().empty() && pages < 20);
  EXPECT_GE(pages, 2);
  ASSERT_EQ(names.size(), 11u);  // and the fixture's "q"
  for (int i = 0; i < 10; ++i) EXPECT_EQ(names[i], absl::StrCat("big", 9 - i));
  EXPECT_EQ(names[10], "q");
}

TEST_F(QueryTest, ExportConfigManifest) {
  v1::ExportConfigRequest request;
  request.set_trial_id(grid_[0].trial_id());
  v1::ExportConfigResponse response = ValueOrDie(coordinator_->ExportConfig(request));
  nlohmann::json manifest = nlohmann::json::parse(response.manifest_json());
  EXPECT_EQ(manifest["model_hash"], model_hash_);
  EXPECT_EQ(manifest["config_hash"], grid_[0].config_hash());
  EXPECT_EQ(manifest["config"]["default"]["weights"], "fixed:8");
  EXPECT_DOUBLE_EQ(manifest["top1"].get<double>(), 0.895);
  EXPECT_EQ(manifest["size_bits"], 8000);
  EXPECT_DOUBLE_EQ(manifest["energy_pj"].get<double>(), 50);
  ASSERT_EQ(manifest["layers"].size(), 2u);
  const nlohmann::json& conv = manifest["layers"][0];
  EXPECT_EQ(conv["name"], "conv1");
  EXPECT_EQ(conv["class"], "conv");
  EXPECT_EQ(conv["weights"]["format"], "fixed:8");
  EXPECT_EQ(conv["weights"]["bits"], 8);
  EXPECT_EQ(conv["weights"]["fractional_bits"], 5);
  EXPECT_EQ(conv["inputs"]["fractional_bits"], 4);
  EXPECT_FALSE(conv.contains("outputs"));
  const nlohmann::json& fc = manifest["layers"][1];
  EXPECT_EQ(fc["weights"]["format"], "int:8:asym:tensor");
  EXPECT_DOUBLE_EQ(fc["weights"]["scale"][0].get<double>(), 0.25);
  EXPECT_EQ(fc["weights"]["zero_point"][0], 3);
  EXPECT_FALSE(fc["weights"].contains("fractional_bits"));
  EXPECT_EQ(fc["outputs"]["max_exponent"], -1);

  request.set_qdq_onnx(true);
  absl::StatusOr<v1::ExportConfigResponse> qdq = coordinator_->ExportConfig(request);
  EXPECT_EQ(qdq.status().code(), absl::StatusCode::kFailedPrecondition);
  // conv1 is fixed point: no exact QDQ form (server/export/qdq.h; tested on real trials there).
  EXPECT_THAT(std::string(qdq.status().message()), HasSubstr("conv1 weights uses fixed:8"));

  v1::ExportConfigRequest running;
  running.set_trial_id(grid_[3].trial_id());
  absl::StatusOr<v1::ExportConfigResponse> unfinished = coordinator_->ExportConfig(running);
  EXPECT_EQ(unfinished.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(unfinished.status().message()), HasSubstr("running"));
  v1::ExportConfigRequest unknown;
  unknown.set_trial_id(99999);
  EXPECT_EQ(coordinator_->ExportConfig(unknown).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, QdqExportOfAFineTunedTrialIsRefused) {
  Submit(Spec("ft", {{"finetune", {kFixed8}, "", false, 100}}));
  v1::LeasedTrial leased = LeaseOne();
  EXPECT_EQ(leased.spec().finetune().steps(), 100);
  ASSERT_TRUE(Accepted(ReportResult(leased, MakeResult(0.88, 8000))));
  v1::ExportConfigRequest request;
  request.set_trial_id(leased.trial_id());
  EXPECT_TRUE(coordinator_->ExportConfig(request).ok());  // the manifest is fine
  request.set_qdq_onnx(true);
  absl::StatusOr<v1::ExportConfigResponse> qdq = coordinator_->ExportConfig(request);
  EXPECT_EQ(qdq.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(qdq.status().message()), HasSubstr("was fine-tuned (100 steps)"));
  EXPECT_THAT(std::string(qdq.status().message()), HasSubstr("bitsweep finetune"));
}

// --- Models, watching, metrics ----------------------------------------------------------------

TEST_F(CoordinatorTest, PutModelIsContentAddressedAndChecked) {
  const std::string bytes = TinyOnnxModel("another");
  v1::UploadModelResponse first = ValueOrDie(coordinator_->PutModel("m.onnx", bytes, ""));
  EXPECT_EQ(first.model_hash(), Sha256Hex(bytes));
  EXPECT_EQ(first.size_bytes(), static_cast<int64_t>(bytes.size()));
  EXPECT_FALSE(first.already_present());
  v1::UploadModelResponse again =
      ValueOrDie(coordinator_->PutModel("m.onnx", bytes, first.model_hash()));
  EXPECT_TRUE(again.already_present());
  EXPECT_EQ(again.model_hash(), first.model_hash());
  EXPECT_EQ(ValueOrDie(coordinator_->GetModelBytes(first.model_hash())), bytes);
  EXPECT_EQ(coordinator_->GetModelBytes("00ff").status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<v1::UploadModelResponse> mismatch =
      coordinator_->PutModel("m.onnx", TinyOnnxModel("third"), first.model_hash());
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mismatch.status().message()), HasSubstr("expected_sha256"));

  absl::StatusOr<v1::UploadModelResponse> garbage =
      coordinator_->PutModel("junk.onnx", std::string("\xff\xff\xff not a model", 18), "");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr("junk.onnx"));

  absl::StatusOr<v1::UploadModelResponse> unchecked =
      coordinator_->PutModel("bad-op.onnx", TinyOnnxModel("x", "NoSuchOperator"), "");
  EXPECT_EQ(unchecked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unchecked.status().message()), HasSubstr("NoSuchOperator"));
  EXPECT_EQ(Count("SELECT count(*) FROM models"), 2);
}

// Models are files beside the database (db-models/<hash>.onnx), written while the upload
// streams in; the table row holds no bytes. Refused uploads leave no file behind, and a model
// past max_model_bytes is refused at the chunk that passes it.
TEST_F(CoordinatorTest, UploadsStreamToAFilePerModel) {
  const std::string bytes = TinyOnnxModel("streamed");
  std::unique_ptr<ModelUpload> upload =
      ValueOrDie(coordinator_->StartModelUpload("streamed.onnx"));
  ASSERT_NE(upload, nullptr);
  for (size_t at = 0; at < bytes.size(); at += 7) {
    ASSERT_OK(upload->Append(absl::string_view(bytes).substr(at, 7)));
  }
  const std::string staging = upload->path();
  EXPECT_TRUE(std::filesystem::exists(staging));
  v1::UploadModelResponse stored =
      ValueOrDie(coordinator_->FinishModelUpload(std::move(upload), ""));
  EXPECT_EQ(stored.model_hash(), Sha256Hex(bytes));
  EXPECT_FALSE(std::filesystem::exists(staging));
  const std::filesystem::path file =
      std::filesystem::path(db_path_ + "-models") / (stored.model_hash() + ".onnx");
  ASSERT_TRUE(std::filesystem::exists(file));
  EXPECT_EQ(std::filesystem::file_size(file), bytes.size());
  EXPECT_EQ(Count(absl::StrCat("SELECT in_file FROM models WHERE hash = '", stored.model_hash(),
                               "' AND length(bytes) = 0")),
            1);
  // Read back in chunks, the total first.
  std::string read;
  int chunks = 0;
  ASSERT_OK(coordinator_->ReadModel(stored.model_hash(), 10,
                                    [&](int64_t total, absl::string_view chunk) {
                                      EXPECT_EQ(total, static_cast<int64_t>(bytes.size()));
                                      EXPECT_LE(chunk.size(), 10u);
                                      read.append(chunk.data(), chunk.size());
                                      ++chunks;
                                      return true;
                                    }));
  EXPECT_EQ(read, bytes);
  EXPECT_EQ(chunks, static_cast<int>((bytes.size() + 9) / 10));

  // A refused model leaves neither a row nor a file.
  std::unique_ptr<ModelUpload> junk = ValueOrDie(coordinator_->StartModelUpload("junk.onnx"));
  ASSERT_NE(junk, nullptr);
  ASSERT_OK(junk->Append("not a model at all"));
  const std::string junk_path = junk->path();
  EXPECT_EQ(coordinator_->FinishModelUpload(std::move(junk), "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(junk_path));
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(db_path_ + "-models")) {
    files += entry.path().extension() == ".onnx" ? 1 : 0;
  }
  EXPECT_EQ(files, Count("SELECT count(*) FROM models"));
}

// Per-channel normalisation is checked against the model's input at submit (the tiny model's
// input is [1, 4]: four channels), not on a worker later.
TEST_F(CoordinatorTest, MeanAndStdMustMatchTheModelsInputChannels) {
  v1::SweepSpec spec = Spec("a", {{"grid", {kFixed8}}});
  for (float v : {0.1f, 0.2f, 0.3f}) spec.mutable_settings()->mutable_dataset()->add_mean(v);
  absl::Status three = coordinator_->SubmitSweep(spec).status();
  EXPECT_EQ(three.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(three.message()),
              HasSubstr("settings.dataset.mean: 3 values, but the model's input has 4 channels"));
  spec.mutable_settings()->mutable_dataset()->add_mean(0.4f);
  for (int i = 0; i < 4; ++i) spec.mutable_settings()->mutable_dataset()->add_std(0.5f);
  EXPECT_TRUE(coordinator_->SubmitSweep(spec).ok());
  v1::DatasetRef* dataset = spec.mutable_settings()->mutable_dataset();
  dataset->clear_mean();
  dataset->clear_std();
  dataset->add_mean(0.5f);  // one value serves every channel
  dataset->add_std(0.25f);
  EXPECT_TRUE(coordinator_->SubmitSweep(spec).ok());
  dataset->clear_std();
  dataset->add_std(0.25f);
  dataset->add_std(0.25f);
  dataset->clear_mean();
  EXPECT_THAT(std::string(coordinator_->SubmitSweep(spec).status().message()),
              HasSubstr("settings.dataset.std: 2 values, but the model's input has 4 channels"));
}

TEST_F(CoordinatorTest, ModelsPastTheSizeLimitAreRefusedAsTheyArrive) {
  CoordinatorOptions options = Options();
  options.max_model_bytes = 100;
  coordinator_.reset();
  coordinator_ = ValueOrDie(Coordinator::Open(options));
  std::unique_ptr<ModelUpload> upload = ValueOrDie(coordinator_->StartModelUpload("big.onnx"));
  ASSERT_NE(upload, nullptr);
  ASSERT_OK(upload->Append(std::string(60, 'x')));
  absl::Status over = upload->Append(std::string(41, 'x'));
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(over.message()), HasSubstr("'big.onnx' is larger than 100 bytes"));
  EXPECT_EQ(upload->size(), 60);
}

TEST_F(CoordinatorTest, WaitForSweepChangeSeesVersions) {
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  const int64_t first =
      ValueOrDie(coordinator_->WaitForSweepChange(sweep.id(), 0, absl::ZeroDuration()));
  EXPECT_GT(first, 0);
  EXPECT_EQ(ValueOrDie(coordinator_->WaitForSweepChange(sweep.id(), first, absl::ZeroDuration())),
            first);  // timeout: the same version
  v1::LeasedTrial leased = LeaseOne();
  const int64_t second =
      ValueOrDie(coordinator_->WaitForSweepChange(sweep.id(), first, absl::Seconds(5)));
  EXPECT_GT(second, first);
  Heartbeat({leased.lease_id()});  // a heartbeat changes nothing people see
  EXPECT_EQ(ValueOrDie(coordinator_->WaitForSweepChange(sweep.id(), second, absl::ZeroDuration())),
            second);
  EXPECT_TRUE(Accepted(ReportResult(leased, MakeResult(0.9, 100))));
  EXPECT_GT(ValueOrDie(coordinator_->WaitForSweepChange(sweep.id(), second, absl::Seconds(5))), second);
  EXPECT_EQ(coordinator_->WaitForSweepChange(999, 0, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, WorkersConnectedCountsRecentHeartbeats) {
  EXPECT_EQ(Metric("bitsweep_workers_connected"), 1);
  RegisterWorker("host-b");
  EXPECT_EQ(Metric("bitsweep_workers_connected"), 2);
  clock_.Advance(absl::Seconds(31));  // three heartbeat intervals and a bit
  Heartbeat({});                      // only worker_ is seen
  EXPECT_EQ(Metric("bitsweep_workers_connected"), 1);
}

TEST_F(CoordinatorTest, LongPollLeaseWakesWhenWorkIsQueued) {
  // The waiter blocks on the condition variable (real time, up to 60 s) until Submit queues a
  // trial; if Submit wins the race the lease is simply immediate. Either way: no sleeping.
  absl::StatusOr<v1::LeaseResponse> response;
  const absl::Time start = absl::Now();
  std::thread waiter([&] {
    v1::LeaseRequest request;
    request.set_worker_id(worker_);
    request.set_wait_ms(60'000);
    response = coordinator_->Lease(request);
  });
  v1::Sweep sweep = Submit(Spec("a", {{"grid", {kFixed8}}}));
  waiter.join();
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->trials_size(), 1);
  EXPECT_EQ(response->trials(0).trial_id(), Trials(sweep.id())[0].id());
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST(CoordinatorOpenTest, RequiresAClockAndAPath) {
  CoordinatorOptions options;
  options.db_path = TempDbPath("open");
  EXPECT_EQ(Coordinator::Open(options).status().code(), absl::StatusCode::kInvalidArgument);
  FakeClock clock;
  options.clock = &clock;
  options.db_path = "/nonexistent-dir/x/y.db";
  EXPECT_FALSE(Coordinator::Open(options).ok());
}

}  // namespace
}  // namespace bitsweep::server

namespace bitsweep::server {
namespace {

// Group commit: many workers reporting at once share transactions (each call in its own
// savepoint). Every result is stored exactly once, every caller gets its own answer, a call that
// fails inside a shared transaction rolls back only itself, and all of it survives a reopen.
TEST_F(CoordinatorTest, ConcurrentReportsShareCommitsAndEachGetsItsOwnAnswer) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 10;
  constexpr int kTrials = kThreads * kPerThread;
  std::vector<std::string> configs;
  for (int i = 0; i < kTrials; ++i) {
    configs.push_back(absl::StrCat(R"({"default": {"weights": "fixed:8"}, "seed": )", i, "}"));
  }
  v1::Sweep sweep = Submit(Spec("group", {{"grid", configs}, {"next", {kFixed2}}}));
  std::vector<v1::LeasedTrial> leased = Lease(64);
  for (const v1::LeasedTrial& t : Lease(kTrials - 64)) leased.push_back(t);
  ASSERT_EQ(static_cast<int>(leased.size()), kTrials);
  const std::string other_worker = RegisterWorker("host-b");

  auto top1_of = [](int i) { return 0.5 + i / 1000.0; };
  std::atomic<int> wrong_answers{0};
  absl::Barrier start(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.Block();
      for (int k = 0; k < kPerThread; ++k) {
        const int i = t * kPerThread + k;
        const v1::LeasedTrial& trial = leased[i];
        // Fails inside the shared transaction: only this call is rolled back.
        absl::StatusOr<v1::ReportResponse> bad =
            ReportResult(trial, MakeResult(std::numeric_limits<double>::quiet_NaN(), 1));
        if (bad.status().code() != absl::StatusCode::kInvalidArgument) ++wrong_answers;
        // Unknown trial: NOT_FOUND, nothing stored.
        v1::LeasedTrial unknown = trial;
        unknown.set_trial_id(100000 + i);
        if (ReportResult(unknown, MakeResult(0.9, 1)).status().code() !=
            absl::StatusCode::kNotFound) {
          ++wrong_answers;
        }
        // Another trial's lease: refused.
        v1::LeasedTrial mismatched = trial;
        mismatched.set_lease_id(leased[(i + 1) % kTrials].lease_id());
        absl::StatusOr<v1::ReportResponse> refused = ReportResult(mismatched, MakeResult(0.9, 1));
        if (!refused.ok() || refused->accepted()) ++wrong_answers;
        // The real report, then a retry of it with other numbers: both accepted, first stored.
        absl::StatusOr<v1::ReportResponse> first =
            ReportResult(trial, MakeResult(top1_of(i), 1000 + i));
        if (!first.ok() || !first->accepted()) ++wrong_answers;
        absl::StatusOr<v1::ReportResponse> retry = ReportResult(trial, MakeResult(0.1, 1));
        if (!retry.ok() || !retry->accepted()) ++wrong_answers;
        // Heartbeats and empty lease attempts of another worker join the same batches.
        v1::HeartbeatRequest heartbeat;
        heartbeat.set_worker_id(other_worker);
        heartbeat.add_lease_ids(trial.lease_id());  // not this worker's: lost
        absl::StatusOr<v1::HeartbeatResponse> beat = coordinator_->Heartbeat(heartbeat);
        if (!beat.ok() || beat->lost_lease_ids_size() != 1) ++wrong_answers;
      }
    });
  }
  start.Block();
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong_answers.load(), 0);

  auto check = [&] {
    EXPECT_EQ(Count("SELECT count(*) FROM results"), kTrials);
    EXPECT_EQ(Count("SELECT count(*) FROM trial_layers"), 2 * kTrials);
    EXPECT_EQ(Count("SELECT count(*) FROM leases WHERE report_accepted = 1 "
                    "AND outcome = 'result'"),
              kTrials);
    std::vector<v1::Trial> trials = Trials(sweep.id());
    ASSERT_EQ(static_cast<int>(trials.size()), kTrials + 1);  // + the next step's trial
    for (int i = 0; i < kTrials; ++i) {
      const v1::Trial& trial = trials[i];
      EXPECT_EQ(trial.id(), leased[i].trial_id());
      EXPECT_EQ(trial.state(), v1::TRIAL_SUCCEEDED);
      EXPECT_DOUBLE_EQ(trial.result().top1(), top1_of(i));  // the first good report's
      EXPECT_EQ(trial.result().size_bits(), 1000 + i);
    }
    EXPECT_EQ(trials[kTrials].state(), v1::TRIAL_QUEUED);  // the step advanced exactly once
    v1::Sweep now = GetSweep(sweep.id());
    EXPECT_EQ(now.trials_succeeded(), kTrials);
    EXPECT_EQ(now.trials_queued(), 1);
    EXPECT_THAT(now.finished_stages(), ::testing::ElementsAre("grid"));
  };
  check();
  EXPECT_EQ(Metric("bitsweep_reports_total", "outcome", "result"), kTrials);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "succeeded"), kTrials);
  EXPECT_EQ(Metric("bitsweep_trials", "state", "queued"), 1);
  Reopen();  // committed before acknowledged: all of it is in the file
  check();
}

}  // namespace
}  // namespace bitsweep::server
