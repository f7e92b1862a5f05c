// Tests for server/frontier: NonDominated and Hypervolume2D against brute force on random points
// (ties and duplicates included), hand-computed hypervolumes, and BuildFrontier's ordering,
// margin flags, within_margin_only filter and normalized hypervolume.
#include "server/frontier/frontier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace bitsweep::server {
namespace {

bool DominatesBrute(const std::vector<double>& a, const std::vector<double>& b) {
  bool strictly = false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k] > b[k]) return false;
    strictly |= a[k] < b[k];
  }
  return strictly;
}

std::vector<std::vector<double>> RandomPoints(std::mt19937& rng, int n, int dims, int levels) {
  // Few distinct levels per coordinate: plenty of ties and exact duplicates.
  std::uniform_int_distribution<int> level(0, levels - 1);
  std::vector<std::vector<double>> points(n, std::vector<double>(dims));
  for (auto& p : points) {
    for (double& v : p) v = level(rng) * 0.5;
  }
  return points;
}

TEST(NonDominated, MatchesBruteForceOnRandomPoints) {
  for (unsigned seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    for (int dims = 2; dims <= 4; ++dims) {
      for (int n : {0, 1, 5, 40}) {
        const auto points = RandomPoints(rng, n, dims, 5);
        const std::vector<size_t> kept = NonDominated(points);
        ASSERT_TRUE(std::is_sorted(kept.begin(), kept.end()));
        std::set<size_t> kept_set(kept.begin(), kept.end());
        ASSERT_EQ(kept_set.size(), kept.size()) << "indices repeat";
        for (size_t i = 0; i < points.size(); ++i) {
          bool dominated = false, later_duplicate = false;
          for (size_t j = 0; j < points.size(); ++j) {
            if (DominatesBrute(points[j], points[i])) dominated = true;
            if (j < i && points[j] == points[i]) later_duplicate = true;
          }
          EXPECT_EQ(kept_set.count(i) == 1, !dominated && !later_duplicate)
              << "seed " << seed << " dims " << dims << " point " << i;
        }
        // Every discarded point is dominated by or equal to a kept one.
        for (size_t i = 0; i < points.size(); ++i) {
          if (kept_set.count(i)) continue;
          EXPECT_TRUE(std::any_of(kept.begin(), kept.end(), [&](size_t k) {
            return DominatesBrute(points[k], points[i]) || points[k] == points[i];
          }));
        }
      }
    }
  }
}

TEST(NonDominated, KeepsFirstOfDuplicates) {
  EXPECT_EQ(NonDominated({{1, 2}, {1, 2}, {2, 1}, {2, 1}}), (std::vector<size_t>{0, 2}));
  EXPECT_EQ(NonDominated({{3, 3}, {1, 1}, {1, 1}}), (std::vector<size_t>{1}));
  EXPECT_TRUE(NonDominated({}).empty());
}

// Area of the union of [x, rx) x [y, ry) by counting unit cells (integer coordinates only).
double HypervolumeByCells(const std::vector<std::array<double, 2>>& points,
                          std::array<double, 2> ref) {
  double area = 0;
  for (int x = 0; x < static_cast<int>(ref[0]); ++x) {
    for (int y = 0; y < static_cast<int>(ref[1]); ++y) {
      for (const auto& p : points) {
        if (p[0] <= x && p[1] <= y) {
          area += 1;
          break;
        }
      }
    }
  }
  return area;
}

TEST(Hypervolume2D, MatchesCellCountOnRandomIntegerPoints) {
  for (unsigned seed = 1; seed <= 30; ++seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> coord(0, 12);  // some beyond the reference
    std::uniform_int_distribution<int> count(0, 25);
    std::vector<std::array<double, 2>> points(count(rng));
    for (auto& p : points) p = {double(coord(rng)), double(coord(rng))};
    const std::array<double, 2> ref = {10, 11};
    EXPECT_DOUBLE_EQ(Hypervolume2D(points, ref), HypervolumeByCells(points, ref)) << seed;
    // Order does not matter.
    std::shuffle(points.begin(), points.end(), rng);
    EXPECT_DOUBLE_EQ(Hypervolume2D(points, ref), HypervolumeByCells(points, ref)) << seed;
  }
}

TEST(Hypervolume2D, HandComputedCases) {
  EXPECT_DOUBLE_EQ(Hypervolume2D({}, {1, 1}), 0.0);
  EXPECT_DOUBLE_EQ(Hypervolume2D({{0.5, 0.5}}, {1, 1}), 0.25);
  // Two boxes 0.8 x 0.4 and 0.4 x 0.8 overlapping in 0.4 x 0.4.
  EXPECT_NEAR(Hypervolume2D({{0.2, 0.6}, {0.6, 0.2}}, {1, 1}), 0.48, 1e-12);
  // A dominated point adds nothing; a point on or beyond the reference adds nothing.
  EXPECT_NEAR(Hypervolume2D({{0.2, 0.6}, {0.6, 0.2}, {0.7, 0.7}, {1.0, 0.0}, {0.0, 1.5}}, {1, 1}),
              0.48, 1e-12);
  EXPECT_DOUBLE_EQ(Hypervolume2D({{0, 0}}, {2, 3}), 6.0);
}

v1::Trial MakeTrial(int64_t id, double top1, int64_t size, double energy = 0,
                    v1::TrialState state = v1::TRIAL_SUCCEEDED) {
  v1::Trial t;
  t.set_id(id);
  t.set_state(state);
  t.mutable_result()->set_top1(top1);
  t.mutable_result()->set_top5(std::min(1.0, top1 + 0.05));
  t.mutable_result()->set_size_bits(size);
  t.mutable_result()->set_energy_pj(energy);
  t.mutable_spec()->set_label("trial " + std::to_string(id));
  return t;
}

std::vector<v1::Trial> SampleTrials() {
  return {
      MakeTrial(1, 0.90, 1000, 50),   // fp32 baseline
      MakeTrial(2, 0.895, 250, 20),   // within 1 pp
      MakeTrial(3, 0.85, 125, 10),    // small but outside the margin
      MakeTrial(4, 0.80, 500, 5),     // dominated by 2 in top1/size
      MakeTrial(5, 0.99, 10, 1, v1::TRIAL_FAILED),  // ignored: not succeeded
  };
}

std::vector<int64_t> Ids(const v1::Frontier& f) {
  std::vector<int64_t> ids;
  for (const auto& p : f.points()) ids.push_back(p.trial_id());
  return ids;
}

TEST(BuildFrontier, SortsBestFirstAndFlagsMargin) {
  const v1::Frontier f = BuildFrontier(7, SampleTrials(), {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE},
                                       0.90, 1.0);
  EXPECT_EQ(f.sweep_id(), 7);
  EXPECT_EQ(Ids(f), (std::vector<int64_t>{1, 2, 3}));
  ASSERT_EQ(f.points_size(), 3);
  EXPECT_TRUE(f.points(0).within_margin());
  EXPECT_TRUE(f.points(1).within_margin());
  EXPECT_FALSE(f.points(2).within_margin());
  EXPECT_DOUBLE_EQ(f.points(1).values(0), 0.895);
  EXPECT_DOUBLE_EQ(f.points(1).values(1), 250);
  EXPECT_EQ(f.points(1).spec().label(), "trial 2");
  EXPECT_EQ(f.points(1).result().size_bits(), 250);
  EXPECT_DOUBLE_EQ(f.baseline_top1(), 0.90);
  EXPECT_DOUBLE_EQ(f.error_margin(), 1.0);
  // Unit square: trial 1 at (0.1, 1.0) adds nothing, trial 2 at (0.105, 0.25), trial 3 at
  // (0.15, 0.125): 0.895 * 0.75 + 0.85 * 0.125.
  ASSERT_TRUE(f.has_hypervolume());
  EXPECT_NEAR(f.hypervolume(), 0.895 * 0.75 + 0.85 * 0.125, 1e-12);
}

TEST(BuildFrontier, WithinMarginOnlyKeepsTheCostReference) {
  const v1::Frontier f = BuildFrontier(7, SampleTrials(), {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE},
                                       0.90, 1.0, /*within_margin_only=*/true);
  EXPECT_EQ(Ids(f), (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(f.hypervolume(), 0.895 * 0.75, 1e-12);
  // A wider margin lets trial 3 in.
  const v1::Frontier wide = BuildFrontier(7, SampleTrials(),
                                          {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE}, 0.90, 5.0, true);
  EXPECT_EQ(Ids(wide), (std::vector<int64_t>{1, 2, 3}));
}

TEST(BuildFrontier, WithoutBaselineNothingIsWithinMargin) {
  const v1::Frontier f = BuildFrontier(1, SampleTrials(), {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE},
                                       std::nullopt, 1.0);
  EXPECT_EQ(f.points_size(), 3);
  EXPECT_FALSE(f.has_baseline_top1());
  for (const auto& p : f.points()) EXPECT_FALSE(p.within_margin());
  EXPECT_EQ(BuildFrontier(1, SampleTrials(), {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE},
                          std::nullopt, 1.0, true)
                .points_size(),
            0);
}

TEST(BuildFrontier, CostFirstSortsCheapestFirst) {
  const v1::Frontier f = BuildFrontier(1, SampleTrials(), {v1::OBJECTIVE_SIZE, v1::OBJECTIVE_TOP1},
                                       0.9, 1.0);
  EXPECT_EQ(Ids(f), (std::vector<int64_t>{3, 2, 1}));
  EXPECT_NEAR(f.hypervolume(), 0.895 * 0.75 + 0.85 * 0.125, 1e-12);  // symmetric in the axes
}

TEST(BuildFrontier, ThreeObjectivesHaveNoHypervolume) {
  const v1::Frontier f = BuildFrontier(
      1, SampleTrials(), {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE, v1::OBJECTIVE_ENERGY}, 0.9, 1.0);
  EXPECT_FALSE(f.has_hypervolume());
  // Trial 4 has the lowest energy: it is non-dominated now.
  EXPECT_EQ(Ids(f), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(f.objectives_size(), 3);
}

TEST(BuildFrontier, EqualPointsKeepTheLowerTrialId) {
  std::vector<v1::Trial> trials = {MakeTrial(9, 0.8, 100), MakeTrial(3, 0.8, 100)};
  const v1::Frontier f = BuildFrontier(1, trials, {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE}, 0.8, 1);
  // NonDominated keeps the first given; the order of trials decides, and it is trial 9 here.
  EXPECT_EQ(Ids(f), (std::vector<int64_t>{9}));
}

TEST(BuildFrontier, AllZeroCostGivesZeroHypervolume) {
  std::vector<v1::Trial> trials = {MakeTrial(1, 0.8, 0)};
  const v1::Frontier f = BuildFrontier(1, trials, {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE}, 0.8, 1);
  EXPECT_DOUBLE_EQ(f.hypervolume(), 0.0);
}

TEST(WithinMargin, BoundaryIsInclusive) {
  EXPECT_TRUE(WithinMargin(0.89, 0.90, 1.0));
  EXPECT_TRUE(WithinMargin(0.95, 0.90, 0.0));
  EXPECT_FALSE(WithinMargin(0.8899, 0.90, 1.0));
}

TEST(Objectives, NamesRoundTrip) {
  for (v1::Objective o : {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_TOP5, v1::OBJECTIVE_SIZE,
                          v1::OBJECTIVE_ENERGY, v1::OBJECTIVE_BOPS}) {
    absl::StatusOr<v1::Objective> parsed = ParseObjective(ObjectiveName(o));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, o);
  }
  EXPECT_EQ(*ParseObjective("Size"), v1::OBJECTIVE_SIZE);
  absl::StatusOr<v1::Objective> bad = ParseObjective("latency");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("latency"), std::string::npos);
  EXPECT_NE(bad.status().message().find("top1, top5, size, energy, bops"), std::string::npos);
  EXPECT_TRUE(IsMaximized(v1::OBJECTIVE_TOP5));
  EXPECT_FALSE(IsMaximized(v1::OBJECTIVE_BOPS));
}

TEST(Objectives, ValueReadsTheResult) {
  v1::TrialResult r;
  r.set_top1(0.5);
  r.set_top5(0.75);
  r.set_size_bits(123);
  r.set_energy_pj(4.5);
  r.set_bops(77);
  EXPECT_DOUBLE_EQ(ObjectiveValue(r, v1::OBJECTIVE_TOP1), 0.5);
  EXPECT_DOUBLE_EQ(ObjectiveValue(r, v1::OBJECTIVE_TOP5), 0.75);
  EXPECT_DOUBLE_EQ(ObjectiveValue(r, v1::OBJECTIVE_SIZE), 123);
  EXPECT_DOUBLE_EQ(ObjectiveValue(r, v1::OBJECTIVE_ENERGY), 4.5);
  EXPECT_DOUBLE_EQ(ObjectiveValue(r, v1::OBJECTIVE_BOPS), 77);
}

TEST(Objectives, Resolve) {
  const std::vector<v1::Objective> defaults = {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE};
  EXPECT_EQ(*ResolveObjectives({}, defaults), defaults);
  EXPECT_EQ(*ResolveObjectives({v1::OBJECTIVE_TOP5, v1::OBJECTIVE_ENERGY}, defaults),
            (std::vector<v1::Objective>{v1::OBJECTIVE_TOP5, v1::OBJECTIVE_ENERGY}));
  for (const std::vector<v1::Objective>& bad :
       {std::vector<v1::Objective>{v1::OBJECTIVE_TOP1},
        std::vector<v1::Objective>{v1::OBJECTIVE_TOP1, v1::OBJECTIVE_TOP1},
        std::vector<v1::Objective>{v1::OBJECTIVE_TOP1, v1::OBJECTIVE_UNSPECIFIED},
        std::vector<v1::Objective>{v1::OBJECTIVE_TOP1, static_cast<v1::Objective>(42)}}) {
    absl::StatusOr<std::vector<v1::Objective>> r = ResolveObjectives(bad, defaults);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("objectives"), std::string::npos);
  }
}

}  // namespace
}  // namespace bitsweep::server
