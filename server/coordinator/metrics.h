// The coordinator's Prometheus metrics (every metric is listed in docs/SERVICE.md, "Metrics").
// Two parts:
//
// - CoordinatorMetrics: counters, gauges and histograms the domain code updates as state changes
//   commit. Its methods do nothing when no registry was given, so the domain code calls them
//   unconditionally. Every label value is created up front (a rate reads 0, not "no data",
//   before the first event).
//
//     CoordinatorMetrics metrics(options.metrics);   // may be null
//     metrics.SetTrialCounts(counts_by_state);        // at startup, from the database
//     metrics.AddTrials(v1::TRIAL_QUEUED, -1); metrics.AddTrials(v1::TRIAL_RUNNING, +1);
//
// - SweepMetricsCollector: the per-sweep series (bitsweep_sweep_*), computed at scrape time from
//   the coordinator's own API, for the sweeps still running plus the `keep_finished` most
//   recently finished ones: a sweep's series disappear once it falls out of that window, so the
//   number of series stays bounded however many sweeps ran.
//   Each scrape first calls Coordinator::ExpireLeases, so that expired leases and the workers
//   gauge are current even when no worker calls in.
//
//     auto sweeps = std::make_shared<SweepMetricsCollector>(coordinator.get(), 5);
//     exposer.RegisterCollectable(sweeps);   // keep `sweeps` alive as long as the exposer
#ifndef BITSWEEP_SERVER_COORDINATOR_METRICS_H_
#define BITSWEEP_SERVER_COORDINATOR_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "bitsweep/v1/explorer.pb.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace prometheus {
class Registry;
class Gauge;
class Counter;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace bitsweep::server {

class Coordinator;

// Report outcomes (bitsweep_reports_total{outcome}) and retry reasons
// (bitsweep_trial_retries_total{reason}); every value is pre-initialised.
inline constexpr const char* kReportOutcomes[] = {"result", "error", "permanent_error",
                                                  "refused"};
inline constexpr const char* kRetryReasons[] = {"error", "lease_expired"};

class CoordinatorMetrics {
 public:
  // Indexed by v1::TrialState (UNSPECIFIED unused).
  using TrialCounts = std::array<int64_t, 6>;

  explicit CoordinatorMetrics(prometheus::Registry* registry);
  bool enabled() const { return registry_ != nullptr; }

  void SetTrialCounts(const TrialCounts& counts);
  void AddTrials(v1::TrialState state, int64_t delta);
  void AddLeaseExpiries(int64_t count);
  void SetWorkersConnected(int64_t count);
  void ObserveTrialDuration(double seconds);
  void ObserveStageDuration(double seconds);
  // outcome: one of kReportOutcomes.
  void CountReport(absl::string_view outcome);
  // A lease handed out (one attempt of a trial).
  void CountAttempts(int64_t count);
  // reason: one of kRetryReasons (a trial queued again after a failed attempt).
  void CountRetry(absl::string_view reason);
  // SQLite COMMIT of one transaction (a group commit counts once).
  void ObserveCommit(double seconds);
  // A call's wait for the database (group-commit queue and coordinator lock) before it ran.
  void ObserveLockWait(double seconds);

 private:
  prometheus::Registry* registry_;
  TrialCounts counts_{};
  std::array<prometheus::Gauge*, 6> trials_{};
  prometheus::Gauge* queue_depth_ = nullptr;
  prometheus::Counter* lease_expiries_ = nullptr;
  prometheus::Gauge* workers_connected_ = nullptr;
  prometheus::Histogram* trial_duration_ = nullptr;
  prometheus::Histogram* stage_duration_ = nullptr;
  std::map<std::string, prometheus::Counter*, std::less<>> reports_;
  prometheus::Counter* attempts_ = nullptr;
  std::map<std::string, prometheus::Counter*, std::less<>> retries_;
  prometheus::Histogram* commit_ = nullptr;
  prometheus::Histogram* lock_wait_ = nullptr;
};

// Scrape-time per-sweep metrics (see the file comment). Thread-safe; the coordinator must outlive
// it. Frontier figures of a sweep are recomputed only when the sweep changed since the last
// scrape (its updated_ms moved).
class SweepMetricsCollector : public prometheus::Collectable {
 public:
  // The newest `scan` sweeps are considered (ListSweeps, newest first).
  SweepMetricsCollector(Coordinator* coordinator, int keep_finished, int scan = 200);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  struct FrontierFigures {
    int64_t updated_ms = -1;
    int64_t frontier_size = 0;
    bool has_highest_top1 = false;
    double highest_top1 = 0;
    bool has_best_energy = false;
    double best_energy_pj = 0;
  };
  FrontierFigures Figures(const v1::Sweep& sweep) const;

  Coordinator* const coordinator_;
  const int keep_finished_;
  const int scan_;
  mutable absl::Mutex mu_;
  mutable std::map<int64_t, FrontierFigures> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_METRICS_H_
