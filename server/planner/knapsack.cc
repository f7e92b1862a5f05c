// Multiple-choice knapsack over all budgets by merging Pareto lists (see knapsack.h).
#include "server/planner/knapsack.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace bitsweep::server::plan {
namespace {

// A partial plan: the first g groups decided. `parent` indexes the previous group's list.
struct Node {
  double cost = 0;
  double loss = 0;
  int32_t parent = -1;
  int32_t option = -1;
};

// Sorts by cost (then loss) and keeps the points whose loss is below every cheaper point's.
std::vector<Node> Prune(std::vector<Node> nodes) {
  std::sort(nodes.begin(), nodes.end(), [](const Node& a, const Node& b) {
    if (a.cost != b.cost) return a.cost < b.cost;
    if (a.loss != b.loss) return a.loss < b.loss;
    if (a.parent != b.parent) return a.parent < b.parent;  // deterministic among equal plans
    return a.option < b.option;
  });
  std::vector<Node> front;
  for (const Node& n : nodes) {
    if (front.empty() || n.loss < front.back().loss) front.push_back(n);
  }
  return front;
}

// Keeps `max_points` points spread evenly over the list, its two ends included (still sorted by
// cost with decreasing loss, so still a front).
std::vector<Node> Thin(const std::vector<Node>& front, size_t max_points) {
  std::vector<Node> kept;
  const size_t n = front.size();
  size_t last = n;
  for (size_t i = 0; i < max_points; ++i) {
    const size_t index = i * (n - 1) / (max_points - 1);
    if (index != last) kept.push_back(front[index]);
    last = index;
  }
  return kept;
}

}  // namespace

absl::StatusOr<KnapsackFront> ParetoPlans(const std::vector<std::vector<KnapsackOption>>& groups,
                                          size_t max_points) {
  if (groups.empty()) return absl::InvalidArgumentError("knapsack: no groups");
  if (max_points < 2) return absl::InvalidArgumentError("knapsack: max_points below 2");
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("knapsack: group ", g, " has no option"));
    }
    for (const KnapsackOption& o : groups[g]) {
      if (!std::isfinite(o.cost) || !std::isfinite(o.loss)) {
        return absl::InvalidArgumentError(
            absl::StrCat("knapsack: group ", g, " has an option with a non-finite cost or loss"));
      }
    }
  }

  KnapsackFront out;
  std::vector<std::vector<Node>> lists;  // lists[g]: non-dominated plans of groups 0..g
  std::vector<Node> previous = {Node{}};
  for (size_t g = 0; g < groups.size(); ++g) {
    std::vector<Node> next;
    next.reserve(previous.size() * groups[g].size());
    for (size_t p = 0; p < previous.size(); ++p) {
      for (size_t o = 0; o < groups[g].size(); ++o) {
        next.push_back({previous[p].cost + groups[g][o].cost,
                        previous[p].loss + groups[g][o].loss, static_cast<int32_t>(p),
                        static_cast<int32_t>(o)});
      }
    }
    next = Prune(std::move(next));
    if (next.size() > max_points) {
      next = Thin(next, max_points);
      out.exact = false;
    }
    lists.push_back(next);
    previous = std::move(next);
  }

  // Walk each final plan back through the lists to read its choices.
  const std::vector<Node>& last = lists.back();
  out.plans.reserve(last.size());
  for (const Node& end : last) {
    KnapsackPlan plan;
    plan.cost = end.cost;
    plan.loss = end.loss;
    plan.choice.assign(groups.size(), -1);
    const Node* node = &end;
    for (size_t g = groups.size(); g-- > 0;) {
      plan.choice[g] = node->option;
      if (g > 0) node = &lists[g - 1][node->parent];
    }
    out.plans.push_back(std::move(plan));
  }
  return out;
}

const KnapsackPlan* BestWithin(const KnapsackFront& front, double budget) {
  // Plans are sorted by cost; the last one within the budget has the least loss.
  auto after = std::upper_bound(front.plans.begin(), front.plans.end(), budget,
                                [](double b, const KnapsackPlan& p) { return b < p.cost; });
  if (after == front.plans.begin()) return nullptr;
  return &*std::prev(after);
}

}  // namespace bitsweep::server::plan
