#include "server/coordinator/metrics.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/coordinator/coordinator.h"

namespace bitsweep::server {
namespace {

constexpr const char* kTrialStateLabels[] = {"", "queued", "running", "succeeded", "failed",
                                             "cancelled"};

// Trials take from ~0.05 s (a small eval_limit) to minutes (fine-tuning): fine steps where most
// of them fall, so that p50/p95/p99 are not read off one coarse bucket.
const prometheus::Histogram::BucketBoundaries kTrialBuckets = {
    0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60,
    120, 300, 600, 1800, 3600};
const prometheus::Histogram::BucketBoundaries kStageBuckets = {
    0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400};
// SQLite commits in WAL mode take tens of microseconds to a few milliseconds (fsync).
const prometheus::Histogram::BucketBoundaries kStoreBuckets = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};

bool IsFinal(v1::SweepState state) {
  return state == v1::SWEEP_SUCCEEDED || state == v1::SWEEP_FAILED ||
         state == v1::SWEEP_CANCELLED;
}

std::string SweepStateName(v1::SweepState state) {
  std::string name = v1::SweepState_Name(state);
  if (absl::StartsWith(name, "SWEEP_")) name = name.substr(6);
  absl::AsciiStrToLower(&name);
  return name;
}

prometheus::ClientMetric GaugeSample(std::vector<prometheus::ClientMetric::Label> labels,
                                     double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  return metric;
}

prometheus::MetricFamily GaugeFamily(std::string name, std::string help) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  return family;
}

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
  trial_duration_ = &prometheus::BuildHistogram()
                         .Name("bitsweep_trial_duration_seconds")
                         .Help("From lease to accepted report, per evaluated trial")
                         .Register(*registry_)
                         .Add({}, kTrialBuckets);
  stage_duration_ = &prometheus::BuildHistogram()
                         .Name("bitsweep_stage_duration_seconds")
                         .Help("From a planner step's start to its last trial finishing")
                         .Register(*registry_)
                         .Add({}, kStageBuckets);
  auto& reports = prometheus::BuildCounter()
                      .Name("bitsweep_reports_total")
                      .Help("Worker reports by outcome (result, error, permanent_error, refused)")
                      .Register(*registry_);
  for (const char* outcome : kReportOutcomes) {
    reports_[outcome] = &reports.Add({{"outcome", outcome}});
  }
  attempts_ = &prometheus::BuildCounter()
                   .Name("bitsweep_trial_attempts_total")
                   .Help("Leases handed out: attempts at running a trial")
                   .Register(*registry_)
                   .Add({});
  auto& retries = prometheus::BuildCounter()
                      .Name("bitsweep_trial_retries_total")
                      .Help("Trials queued again after a failed attempt, by reason")
                      .Register(*registry_);
  for (const char* reason : kRetryReasons) retries_[reason] = &retries.Add({{"reason", reason}});
  commit_ = &prometheus::BuildHistogram()
                 .Name("bitsweep_store_commit_seconds")
                 .Help("SQLite COMMIT of one transaction (a group commit counts once)")
                 .Register(*registry_)
                 .Add({}, kStoreBuckets);
  lock_wait_ = &prometheus::BuildHistogram()
                    .Name("bitsweep_store_lock_wait_seconds")
                    .Help("A worker call's wait for the database (group-commit queue and "
                          "coordinator lock) before its transaction began")
                    .Register(*registry_)
                    .Add({}, kStoreBuckets);
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

void CoordinatorMetrics::CountReport(absl::string_view outcome) {
  if (!enabled()) return;
  if (auto it = reports_.find(outcome); it != reports_.end()) it->second->Increment();
}

void CoordinatorMetrics::CountAttempts(int64_t count) {
  if (enabled() && count > 0) attempts_->Increment(static_cast<double>(count));
}

void CoordinatorMetrics::CountRetry(absl::string_view reason) {
  if (!enabled()) return;
  if (auto it = retries_.find(reason); it != retries_.end()) it->second->Increment();
}

void CoordinatorMetrics::ObserveCommit(double seconds) {
  if (enabled()) commit_->Observe(seconds);
}

void CoordinatorMetrics::ObserveLockWait(double seconds) {
  if (enabled()) lock_wait_->Observe(seconds);
}

// ---------------------------------------------------------------------------------------------

SweepMetricsCollector::SweepMetricsCollector(Coordinator* coordinator, int keep_finished,
                                             int scan)
    : coordinator_(coordinator),
      keep_finished_(std::max(0, keep_finished)),
      scan_(std::max(1, scan)) {}

SweepMetricsCollector::FrontierFigures SweepMetricsCollector::Figures(
    const v1::Sweep& sweep) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(sweep.id());
    if (it != cache_.end() && it->second.updated_ms == sweep.updated_ms()) return it->second;
  }
  FrontierFigures figures;
  figures.updated_ms = sweep.updated_ms();
  // The sweep's own frontier (its objectives).
  v1::GetFrontierRequest own;
  own.set_sweep_id(sweep.id());
  if (absl::StatusOr<v1::Frontier> f = coordinator_->GetFrontier(own); f.ok()) {
    figures.frontier_size = f->points_size();
  }
  // The highest top-1 is always on the (top-1, size) frontier.
  v1::GetFrontierRequest by_size;
  by_size.set_sweep_id(sweep.id());
  by_size.add_objectives(v1::OBJECTIVE_TOP1);
  by_size.add_objectives(v1::OBJECTIVE_SIZE);
  if (absl::StatusOr<v1::Frontier> f = coordinator_->GetFrontier(by_size); f.ok()) {
    for (const v1::FrontierPoint& p : f->points()) {
      if (!figures.has_highest_top1 || p.result().top1() > figures.highest_top1) {
        figures.highest_top1 = p.result().top1();
        figures.has_highest_top1 = true;
      }
    }
  }
  // The least energy within the margin is on the within-margin (top-1, energy) frontier.
  v1::GetFrontierRequest by_energy;
  by_energy.set_sweep_id(sweep.id());
  by_energy.add_objectives(v1::OBJECTIVE_TOP1);
  by_energy.add_objectives(v1::OBJECTIVE_ENERGY);
  by_energy.set_within_margin_only(true);
  if (absl::StatusOr<v1::Frontier> f = coordinator_->GetFrontier(by_energy); f.ok()) {
    for (const v1::FrontierPoint& p : f->points()) {
      if (!figures.has_best_energy || p.result().energy_pj() < figures.best_energy_pj) {
        figures.best_energy_pj = p.result().energy_pj();
        figures.has_best_energy = true;
      }
    }
  }
  absl::MutexLock lock(&mu_);
  cache_[sweep.id()] = figures;
  return figures;
}

std::vector<prometheus::MetricFamily> SweepMetricsCollector::Collect() const {
  // Gauges that otherwise move only on worker calls (leases past their deadline, workers that
  // went silent) are brought up to date first: the scrape must show a cluster whose workers all
  // died as one without workers.
  coordinator_->ExpireLeases().IgnoreError();
  v1::ListSweepsRequest request;
  request.set_page_size(scan_);
  absl::StatusOr<v1::ListSweepsResponse> listed = coordinator_->ListSweeps(request);
  std::vector<v1::Sweep> shown;
  if (listed.ok()) {
    int finished = 0;
    for (const v1::Sweep& sweep : listed->sweeps()) {  // newest first
      if (IsFinal(sweep.state()) && finished++ >= keep_finished_) continue;
      shown.push_back(sweep);
    }
  }

  auto info = GaugeFamily("bitsweep_sweep_info",
                          "1 per shown sweep; labels: name, strategy, state and the current "
                          "(or last) planner stage");
  auto trials = GaugeFamily("bitsweep_sweep_trials", "Trials of the sweep by state");
  auto cached = GaugeFamily("bitsweep_sweep_trials_cached",
                            "Succeeded trials of the sweep whose result was reused");
  auto progress = GaugeFamily("bitsweep_sweep_progress_ratio",
                              "Finished trials over trials planned so far (later stages add "
                              "trials)");
  auto elapsed = GaugeFamily("bitsweep_sweep_elapsed_seconds",
                             "Since submission (until the end for finished sweeps)");
  auto eta = GaugeFamily("bitsweep_sweep_eta_seconds",
                         "Elapsed / finished x remaining of the trials planned so far, as "
                         "`bitsweep watch` shows it (0 once finished)");
  auto baseline = GaugeFamily("bitsweep_sweep_baseline_top1_ratio",
                              "fp32 baseline top-1 (fraction), once measured");
  auto best_size = GaugeFamily("bitsweep_sweep_best_size_bytes",
                               "Size (weights) of the sweep's best trial: the smallest within "
                               "the error margin, as the CLI's \"best\"");
  auto best_top1 = GaugeFamily("bitsweep_sweep_best_top1_ratio",
                               "Top-1 (fraction) of the sweep's best trial (smallest within the "
                               "margin)");
  auto best_energy = GaugeFamily("bitsweep_sweep_best_energy_joules",
                                 "Least energy per inference among trials within the margin");
  auto highest = GaugeFamily("bitsweep_sweep_highest_top1_ratio",
                             "Highest top-1 (fraction) among the sweep's succeeded trials");
  auto frontier = GaugeFamily("bitsweep_sweep_frontier_size",
                              "Points on the sweep's frontier (its own objectives)");
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::set<int64_t> ids;
  for (const v1::Sweep& sweep : shown) {
    ids.insert(sweep.id());
    const std::string id = absl::StrCat(sweep.id());
    info.metric.push_back(GaugeSample({{"sweep", id},
                                       {"name", sweep.spec().name()},
                                       {"strategy", sweep.spec().strategy()},
                                       {"state", SweepStateName(sweep.state())},
                                       {"stage", sweep.stage()}},
                                      1));
    const std::pair<const char*, int64_t> by_state[] = {
        {"queued", sweep.trials_queued()},       {"running", sweep.trials_running()},
        {"succeeded", sweep.trials_succeeded()}, {"failed", sweep.trials_failed()},
        {"cancelled", sweep.trials_cancelled()}};
    for (const auto& [state, count] : by_state) {
      trials.metric.push_back(
          GaugeSample({{"sweep", id}, {"state", state}}, static_cast<double>(count)));
    }
    cached.metric.push_back(GaugeSample({{"sweep", id}}, static_cast<double>(sweep.trials_cached())));
    const int64_t done =
        sweep.trials_succeeded() + sweep.trials_failed() + sweep.trials_cancelled();
    const int64_t total = sweep.trials_total();
    progress.metric.push_back(GaugeSample(
        {{"sweep", id}}, total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0));
    const int64_t end_ms = sweep.finished_ms() > 0 ? sweep.finished_ms() : now_ms;
    const double elapsed_s = std::max<int64_t>(0, end_ms - sweep.created_ms()) / 1000.0;
    elapsed.metric.push_back(GaugeSample({{"sweep", id}}, elapsed_s));
    if (IsFinal(sweep.state())) {
      eta.metric.push_back(GaugeSample({{"sweep", id}}, 0));
    } else if (done > 0 && done < total) {
      eta.metric.push_back(GaugeSample(
          {{"sweep", id}}, elapsed_s / static_cast<double>(done) * static_cast<double>(total - done)));
    }
    if (sweep.has_baseline_top1()) {
      baseline.metric.push_back(GaugeSample({{"sweep", id}}, sweep.baseline_top1()));
    }
    if (sweep.has_best_size_bits()) {
      best_size.metric.push_back(
          GaugeSample({{"sweep", id}}, static_cast<double>(sweep.best_size_bits()) / 8.0));
    }
    if (sweep.has_best_top1()) {
      best_top1.metric.push_back(GaugeSample({{"sweep", id}}, sweep.best_top1()));
    }
    const FrontierFigures figures = Figures(sweep);
    frontier.metric.push_back(
        GaugeSample({{"sweep", id}}, static_cast<double>(figures.frontier_size)));
    if (figures.has_highest_top1) {
      highest.metric.push_back(GaugeSample({{"sweep", id}}, figures.highest_top1));
    }
    if (figures.has_best_energy) {
      best_energy.metric.push_back(GaugeSample({{"sweep", id}}, figures.best_energy_pj * 1e-12));
    }
  }
  {
    absl::MutexLock lock(&mu_);  // forget sweeps no longer shown
    for (auto it = cache_.begin(); it != cache_.end();) {
      it = ids.count(it->first) ? std::next(it) : cache_.erase(it);
    }
  }
  std::vector<prometheus::MetricFamily> families;
  for (prometheus::MetricFamily* family :
       {&info, &trials, &cached, &progress, &elapsed, &eta, &baseline, &best_size, &best_top1,
        &best_energy, &highest, &frontier}) {
    if (!family->metric.empty()) families.push_back(std::move(*family));
  }
  return families;
}

}  // namespace bitsweep::server
