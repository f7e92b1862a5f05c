// Pareto frontiers over trial results: the N-objective non-dominated set and, for two objectives,
// the hypervolume. Pure functions, no storage: the coordinator feeds them the succeeded trials
// of a sweep whenever a result arrives.
//
//   std::vector<v1::Objective> obj = {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE};
//   v1::Frontier f = BuildFrontier(sweep_id, trials, obj, baseline_top1, /*margin_pp=*/1.0);
#ifndef BITSWEEP_SERVER_FRONTIER_FRONTIER_H_
#define BITSWEEP_SERVER_FRONTIER_FRONTIER_H_

#include <array>
#include <cstddef>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "bitsweep/v1/explorer.pb.h"

namespace bitsweep::server {

// Indices of the points no other point dominates; every coordinate is minimized. A point
// dominates another when it is <= in every coordinate and < in at least one. Of exact
// duplicates, only the first index is kept.
std::vector<size_t> NonDominated(const std::vector<std::vector<double>>& points);

// Area dominated by `points` (both coordinates minimized) and bounded by `reference`; points not
// strictly better than the reference in both coordinates contribute nothing.
double Hypervolume2D(const std::vector<std::array<double, 2>>& points,
                     std::array<double, 2> reference);

// The raw value of an objective in a result (top1 as a fraction, size in bits, ...).
double ObjectiveValue(const v1::TrialResult& result, v1::Objective objective);
bool IsMaximized(v1::Objective objective);  // top1, top5
// "top1", "top5", "size", "energy", "bops"; and back (INVALID_ARGUMENT listing the names).
const char* ObjectiveName(v1::Objective objective);
absl::StatusOr<v1::Objective> ParseObjective(absl::string_view name);

// Checks a caller's objectives: at least two, no duplicates, none unspecified. Empty input gives
// `defaults`.
absl::StatusOr<std::vector<v1::Objective>> ResolveObjectives(
    const std::vector<v1::Objective>& requested, const std::vector<v1::Objective>& defaults);

// The frontier of the succeeded trials among `trials` (others are ignored). A point is within
// the margin when baseline_top1 is known and top1 >= baseline_top1 - margin_pp / 100. With
// within_margin_only, only those points compete. Points sorted best first by the first
// objective; hypervolume set for two objectives (see Frontier.hypervolume in explorer.proto).
v1::Frontier BuildFrontier(int64_t sweep_id, const std::vector<v1::Trial>& trials,
                           const std::vector<v1::Objective>& objectives,
                           std::optional<double> baseline_top1, double margin_pp,
                           bool within_margin_only = false);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_FRONTIER_FRONTIER_H_
