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
#include "absl/strings/string_view.h"
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

// Repeated Objective fields, which protobuf stores as ints.
std::vector<v1::Objective> ToObjectives(const google::protobuf::RepeatedField<int>& values);
// The objectives of a sweep that names none: top1 and size.
const std::vector<v1::Objective>& DefaultSweepObjectives();
// SweepSpec.objectives checked by ResolveObjectives, DefaultSweepObjectives when empty.
absl::StatusOr<std::vector<v1::Objective>> SweepObjectives(const v1::SweepSpec& spec);

// True when a top-1 is within the error margin: top1 >= baseline_top1 - margin_pp / 100, with a
// 1e-9 tolerance so that a top-1 exactly on the boundary is not lost to floating-point rounding
// (0.9 - 0.01 is not exactly 0.89). The planner and the coordinator both use this one test.
bool WithinMargin(double top1, double baseline_top1, double margin_pp);

// The frontier of the succeeded trials among `trials` (others are ignored). A point is within
// the margin when baseline_top1 is known and WithinMargin(top1, *baseline_top1, margin_pp). With
// within_margin_only, only those points compete (without a baseline, none do). Point values are
// the raw objective values (ObjectiveValue); dominance negates the maximized ones. Points sorted
// best first by the first objective, ties by the following objectives, then by trial id.
//
// Hypervolume, set for exactly two objectives: each point is mapped to the unit square, both
// coordinates minimized, with the reference point at (1, 1):
//   accuracy (top1, top5):        1 - value             (reference: accuracy 0, best: 1)
//   cost (size, energy, bops):    value / max_value     (reference: max_value, best: 0)
// where max_value is the largest value of that cost among ALL succeeded trials given (also with
// within_margin_only, so the reference does not move when the filter changes). The result is
// Hypervolume2D of the frontier points against (1, 1), in [0, 1]: the fraction of the square
// that the frontier dominates. A point at the largest cost contributes nothing; when the largest
// cost is 0 (or there are no points) the hypervolume is 0.
v1::Frontier BuildFrontier(int64_t sweep_id, const std::vector<v1::Trial>& trials,
                           const std::vector<v1::Objective>& objectives,
                           std::optional<double> baseline_top1, double margin_pp,
                           bool within_margin_only = false);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_FRONTIER_FRONTIER_H_
