// Exact multiple-choice knapsack over a whole range of budgets, for the hawq strategy (hawq.cc):
// every group (a quantizable layer) must take exactly one of its options (a weight width and an
// activation width), each with a cost (bits, pJ or BOPs) and a predicted loss (top-1 drop); the
// plan minimizing the summed loss under a budget on the summed cost is wanted for every budget.
//
// ParetoPlans is the dynamic program over non-dominated partial plans (Nemhauser and Ullmann's
// list form of the knapsack DP): after g groups it keeps every (cost, loss) pair that no other
// partial plan beats in both, so the final list holds, for each budget B, the optimal plan: the
// entry with the largest cost <= B. Costs are not discretised, so the answer is exact, not an
// approximation on a grid of budgets. When a list would exceed `max_points` it is thinned to that
// many evenly spread points and `exact` turns false (never for the models of our zoo).
//
//   std::vector<std::vector<KnapsackOption>> groups = ...;  // per layer: {cost, loss}
//   ASSIGN_OR_RETURN(KnapsackFront front, ParetoPlans(groups));
//   const KnapsackPlan* best = BestWithin(front, budget);    // null: no plan fits
//   for (size_t g = 0; g < groups.size(); ++g) use(groups[g][best->choice[g]]);
#ifndef BITSWEEP_SERVER_PLANNER_KNAPSACK_H_
#define BITSWEEP_SERVER_PLANNER_KNAPSACK_H_

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"

namespace bitsweep::server::plan {

struct KnapsackOption {
  double cost = 0;
  double loss = 0;
};

struct KnapsackPlan {
  double cost = 0;          // sum of the chosen options' costs
  double loss = 0;          // sum of their losses
  std::vector<int> choice;  // per group, the index of its chosen option
};

struct KnapsackFront {
  // Non-dominated plans by increasing cost and strictly decreasing loss.
  std::vector<KnapsackPlan> plans;
  bool exact = true;  // false when a list was thinned (see max_points)
};

inline constexpr size_t kDefaultMaxFrontPoints = 200000;

// INVALID_ARGUMENT when there are no groups, a group has no option, or a cost or loss is not
// finite.
absl::StatusOr<KnapsackFront> ParetoPlans(const std::vector<std::vector<KnapsackOption>>& groups,
                                          size_t max_points = kDefaultMaxFrontPoints);

// The plan with the least loss among those costing at most `budget` (the most expensive plan of
// the front within it); null when even the cheapest plan costs more.
const KnapsackPlan* BestWithin(const KnapsackFront& front, double budget);

}  // namespace bitsweep::server::plan

#endif  // BITSWEEP_SERVER_PLANNER_KNAPSACK_H_
