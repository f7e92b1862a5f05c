#include "server/coordinator/metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace bitsweep::server {
namespace {

constexpr const char* kTrialStateLabels[] = {"", "queued", "running", "succeeded", "failed",
                                             "cancelled"};

}  // namespace

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry* registry) : registry_(registry) {
  if (registry_ == nullptr) return;
  auto& trials = prometheus::BuildGauge()
                     .Name("bitsweep_trials")
                     .Help("Trials in the database by state")
                     .Register(*registry_);
  for (int state = v1::TRIAL_QUEUED; state <= v1::TRIAL_CANCELLED; ++state) {
    trials_[state] = &trials.Add({{"state", kTrialStateLabels[state]}});
  }
  queue_depth_ = &prometheus::BuildGauge()
                      .Name("bitsweep_queue_depth")
                      .Help("Trials waiting for a worker")
                      .Register(*registry_)
                      .Add({});
  lease_expiries_ = &prometheus::BuildCounter()
                         .Name("bitsweep_lease_expiries_total")
                         .Help("Leases whose deadline passed without a report")
                         .Register(*registry_)
                         .Add({});
  workers_connected_ = &prometheus::BuildGauge()
                            .Name("bitsweep_workers_connected")
                            .Help("Workers seen within three heartbeat intervals")
                            .Register(*registry_)
                            .Add({});
  trial_duration_ =
      &prometheus::BuildHistogram()
           .Name("bitsweep_trial_duration_seconds")
           .Help("From lease to accepted report, per evaluated trial")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120,
                                                             300, 600, 1800, 3600});
  stage_duration_ =
      &prometheus::BuildHistogram()
           .Name("bitsweep_stage_duration_seconds")
           .Help("From a planner step's start to its last trial finishing")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{1, 5, 10, 30, 60, 300, 600, 1800,
                                                             3600, 7200, 21600, 86400});
  frontier_size_ = &prometheus::BuildGauge()
                        .Name("bitsweep_frontier_size")
                        .Help("Points on the sweep's frontier (its own objectives)")
                        .Register(*registry_);
  best_top1_ = &prometheus::BuildGauge()
                    .Name("bitsweep_best_top1")
                    .Help("Best top-1 accuracy (fraction) among the sweep's succeeded trials")
                    .Register(*registry_);
  reports_ = &prometheus::BuildCounter()
                  .Name("bitsweep_reports_total")
                  .Help("Worker reports by outcome")
                  .Register(*registry_);
}

void CoordinatorMetrics::SetTrialCounts(const TrialCounts& counts) {
  counts_ = counts;
  if (!enabled()) return;
  for (int state = v1::TRIAL_QUEUED; state <= v1::TRIAL_CANCELLED; ++state) {
    trials_[state]->Set(static_cast<double>(counts_[state]));
  }
  queue_depth_->Set(static_cast<double>(counts_[v1::TRIAL_QUEUED]));
}

void CoordinatorMetrics::AddTrials(v1::TrialState state, int64_t delta) {
  if (state <= v1::TRIAL_STATE_UNSPECIFIED || state > v1::TRIAL_CANCELLED || delta == 0) return;
  counts_[state] += delta;
  if (!enabled()) return;
  trials_[state]->Set(static_cast<double>(counts_[state]));
  if (state == v1::TRIAL_QUEUED) queue_depth_->Set(static_cast<double>(counts_[state]));
}

void CoordinatorMetrics::AddLeaseExpiries(int64_t count) {
  if (enabled() && count > 0) lease_expiries_->Increment(static_cast<double>(count));
}

void CoordinatorMetrics::SetWorkersConnected(int64_t count) {
  if (enabled()) workers_connected_->Set(static_cast<double>(count));
}

void CoordinatorMetrics::ObserveTrialDuration(double seconds) {
  if (enabled()) trial_duration_->Observe(seconds);
}

void CoordinatorMetrics::ObserveStageDuration(double seconds) {
  if (enabled()) stage_duration_->Observe(seconds);
}

void CoordinatorMetrics::SetFrontier(int64_t sweep_id, int64_t frontier_size, double best_top1) {
  if (!enabled()) return;
  const std::string sweep = absl::StrCat(sweep_id);
  frontier_size_->Add({{"sweep", sweep}}).Set(static_cast<double>(frontier_size));
  best_top1_->Add({{"sweep", sweep}}).Set(best_top1);
}

void CoordinatorMetrics::CountReport(absl::string_view outcome) {
  if (enabled()) reports_->Add({{"outcome", std::string(outcome)}}).Increment();
}

}  // namespace bitsweep::server
