// Tests for server/planner/knapsack.h: the Pareto-list DP against brute-force enumeration of
// every plan on small random instances (integer and real costs, ties, zero losses), plus its
// input checks and thinning.
#include "server/planner/knapsack.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace bitsweep::server::plan {
namespace {

using Groups = std::vector<std::vector<KnapsackOption>>;

// Every plan, enumerated: (cost, loss) of each combination of one option per group.
std::vector<KnapsackOption> AllPlans(const Groups& groups) {
  std::vector<KnapsackOption> plans = {{0, 0}};
  for (const auto& group : groups) {
    std::vector<KnapsackOption> next;
    for (const KnapsackOption& p : plans) {
      for (const KnapsackOption& o : group) next.push_back({p.cost + o.cost, p.loss + o.loss});
    }
    plans = std::move(next);
  }
  return plans;
}

// The least loss of any plan costing at most `budget`; +inf when none fits.
double BruteForceBest(const std::vector<KnapsackOption>& plans, double budget) {
  double best = std::numeric_limits<double>::infinity();
  for (const KnapsackOption& p : plans) {
    if (p.cost <= budget) best = std::min(best, p.loss);
  }
  return best;
}

Groups RandomInstance(std::mt19937& rng, bool integer_costs) {
  std::uniform_int_distribution<int> group_count(1, 5), option_count(1, 5), small(0, 6);
  std::uniform_real_distribution<double> real(0.0, 10.0);
  Groups groups(group_count(rng));
  for (auto& group : groups) {
    group.resize(option_count(rng));
    for (KnapsackOption& o : group) {
      o.cost = integer_costs ? small(rng) : real(rng);
      // Many equal and zero losses, as measured drops clipped at 0 give.
      o.loss = integer_costs ? std::max(0, small(rng) - 2) * 0.25 : real(rng) / 10.0;
    }
  }
  return groups;
}

TEST(Knapsack, MatchesBruteForceOnRandomInstances) {
  std::mt19937 rng(7);
  for (int instance = 0; instance < 400; ++instance) {
    const bool integer_costs = instance % 2 == 0;
    const Groups groups = RandomInstance(rng, integer_costs);
    SCOPED_TRACE(testing::Message() << "instance " << instance);
    absl::StatusOr<KnapsackFront> front = ParetoPlans(groups);
    ASSERT_TRUE(front.ok()) << front.status();
    EXPECT_TRUE(front->exact);
    ASSERT_FALSE(front->plans.empty());
    const std::vector<KnapsackOption> all = AllPlans(groups);

    // Each plan's choices add up to its cost and loss; the list is sorted by cost with strictly
    // falling loss, and no enumerated plan dominates any of its plans.
    for (size_t i = 0; i < front->plans.size(); ++i) {
      const KnapsackPlan& p = front->plans[i];
      ASSERT_EQ(p.choice.size(), groups.size());
      double cost = 0, loss = 0;
      for (size_t g = 0; g < groups.size(); ++g) {
        ASSERT_GE(p.choice[g], 0);
        ASSERT_LT(p.choice[g], static_cast<int>(groups[g].size()));
        cost += groups[g][p.choice[g]].cost;
        loss += groups[g][p.choice[g]].loss;
      }
      EXPECT_NEAR(cost, p.cost, 1e-9);
      EXPECT_NEAR(loss, p.loss, 1e-9);
      if (i > 0) {
        EXPECT_GT(p.cost, front->plans[i - 1].cost);
        EXPECT_LT(p.loss, front->plans[i - 1].loss);
      }
      for (const KnapsackOption& q : all) {
        const bool dominates = q.cost <= p.cost - 1e-9 && q.loss <= p.loss - 1e-9;
        EXPECT_FALSE(dominates);
      }
    }

    // For budgets below, at and between every plan cost: the DP's answer is the brute-force
    // optimum.
    std::vector<double> budgets = {-1.0};
    for (const KnapsackOption& q : all) {
      budgets.push_back(q.cost);
      budgets.push_back(q.cost + 0.5);
      budgets.push_back(q.cost - 1e-6);
    }
    for (double budget : budgets) {
      const double expected = BruteForceBest(all, budget);
      const KnapsackPlan* got = BestWithin(*front, budget);
      if (std::isinf(expected)) {
        EXPECT_EQ(got, nullptr) << "budget " << budget;
      } else {
        ASSERT_NE(got, nullptr) << "budget " << budget;
        EXPECT_LE(got->cost, budget);
        EXPECT_NEAR(got->loss, expected, 1e-9) << "budget " << budget;
      }
    }
  }
}

TEST(Knapsack, HandExample) {
  // Two layers: (cost, loss). The optimum under 5 is 2 + 3 (loss 0.1 + 0.0), not 1 + 3 or 4 + 1.
  const Groups groups = {{{1, 0.5}, {2, 0.1}, {4, 0.0}}, {{1, 0.3}, {3, 0.0}}};
  absl::StatusOr<KnapsackFront> front = ParetoPlans(groups);
  ASSERT_TRUE(front.ok());
  std::vector<std::pair<double, double>> points;
  for (const KnapsackPlan& p : front->plans) points.emplace_back(p.cost, p.loss);
  // All six plans: (2,.8) (4,.5) (3,.4) (5,.1) (5,.3) (7,0). Non-dominated: (2,.8) (3,.4)
  // (5,.1) (7,0).
  EXPECT_EQ(points, (std::vector<std::pair<double, double>>{{2, 0.8}, {3, 0.4}, {5, 0.1}, {7, 0}}));
  const KnapsackPlan* best = BestWithin(*front, 5);
  ASSERT_NE(best, nullptr);
  EXPECT_EQ(best->choice, (std::vector<int>{1, 1}));
  EXPECT_EQ(BestWithin(*front, 1.9), nullptr);
  EXPECT_EQ(BestWithin(*front, 100)->choice, (std::vector<int>{2, 1}));
}

TEST(Knapsack, RejectsBadInput) {
  EXPECT_THAT(std::string(ParetoPlans({}).status().message()), testing::HasSubstr("no groups"));
  EXPECT_THAT(std::string(ParetoPlans({{{1, 0}}, {}}).status().message()),
              testing::HasSubstr("group 1 has no option"));
  EXPECT_THAT(std::string(ParetoPlans({{{std::nan(""), 0}}}).status().message()),
              testing::HasSubstr("non-finite"));
  EXPECT_EQ(ParetoPlans({{{1, 0}}}, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Knapsack, ThinsLongListsKeepingBothEnds) {
  // 12 groups of 2 options with distinct powers of two as costs: 4096 plans, all non-dominated
  // (loss falls exactly as cost rises). Thinned to 100 points, the ends survive.
  Groups groups;
  for (int g = 0; g < 12; ++g) {
    const double c = std::ldexp(1.0, g);
    groups.push_back({{0, c}, {c, 0}});
  }
  absl::StatusOr<KnapsackFront> full = ParetoPlans(groups);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->plans.size(), 4096u);
  EXPECT_TRUE(full->exact);
  absl::StatusOr<KnapsackFront> thin = ParetoPlans(groups, 100);
  ASSERT_TRUE(thin.ok());
  EXPECT_FALSE(thin->exact);
  EXPECT_LE(thin->plans.size(), 100u);
  EXPECT_EQ(thin->plans.front().cost, 0);
  EXPECT_EQ(thin->plans.back().cost, 4095);
  EXPECT_EQ(thin->plans.back().loss, 0);
}

}  // namespace
}  // namespace bitsweep::server::plan
