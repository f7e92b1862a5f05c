// The coordinator's Prometheus metrics (DESIGN.md, "Observability"), behind one class whose
// methods do nothing when no registry was given, so the domain code calls them unconditionally.
//
//   CoordinatorMetrics metrics(options.metrics);   // may be null
//   metrics.SetTrialCounts(counts_by_state);        // at startup, from the database
//   metrics.AddTrials(v1::TRIAL_QUEUED, -1); metrics.AddTrials(v1::TRIAL_RUNNING, +1);
//
// Exported: bitsweep_trials{state}, bitsweep_queue_depth, bitsweep_lease_expiries_total,
// bitsweep_workers_connected, bitsweep_trial_duration_seconds, bitsweep_stage_duration_seconds,
// bitsweep_frontier_size{sweep}, bitsweep_best_top1{sweep}, bitsweep_reports_total{outcome}.
#ifndef BITSWEEP_SERVER_COORDINATOR_METRICS_H_
#define BITSWEEP_SERVER_COORDINATOR_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/string_view.h"
#include "bitsweep/v1/explorer.pb.h"

namespace prometheus {
class Registry;
class Gauge;
class Counter;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace bitsweep::server {

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
  void SetFrontier(int64_t sweep_id, int64_t frontier_size, double best_top1);
  // outcome: "result", "error", "permanent_error", "refused".
  void CountReport(absl::string_view outcome);

 private:
  prometheus::Registry* registry_;
  TrialCounts counts_{};
  std::array<prometheus::Gauge*, 6> trials_{};
  prometheus::Gauge* queue_depth_ = nullptr;
  prometheus::Counter* lease_expiries_ = nullptr;
  prometheus::Gauge* workers_connected_ = nullptr;
  prometheus::Histogram* trial_duration_ = nullptr;
  prometheus::Histogram* stage_duration_ = nullptr;
  prometheus::Family<prometheus::Gauge>* frontier_size_ = nullptr;
  prometheus::Family<prometheus::Gauge>* best_top1_ = nullptr;
  prometheus::Family<prometheus::Counter>* reports_ = nullptr;
};

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_METRICS_H_
