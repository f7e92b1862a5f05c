// Strategy registry: maps the names users write in SweepSpec.strategy to strategy factories.
// Adding a strategy means one file with its class and one line in kStrategies.

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/planner/plan_util.h"
#include "server/planner/strategy.h"

namespace bitsweep::server {
namespace {

struct StrategyEntry {
  const char* name;
  std::unique_ptr<Strategy> (*make)();
};

constexpr StrategyEntry kStrategies[] = {
    {"grid", &plan::NewGridStrategy},
    {"ristretto", &plan::NewRistrettoStrategy},
    {"sensitivity", &plan::NewSensitivityStrategy},
    {"hawq", &plan::NewHawqStrategy},
    {"hawq-table", &plan::NewHawqTableStrategy},
    {"random", &plan::NewRandomStrategy},
    {"evolutionary", &plan::NewEvolutionaryStrategy},
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(absl::string_view name) {
  for (const StrategyEntry& entry : kStrategies) {
    if (name == entry.name) return entry.make();
  }
  return absl::InvalidArgumentError(absl::StrCat("strategy: unknown strategy '", name,
                                                 "' (known: ", absl::StrJoin(StrategyNames(), ", "),
                                                 ")"));
}

std::vector<std::string> StrategyNames() {
  std::vector<std::string> names;
  for (const StrategyEntry& entry : kStrategies) names.push_back(entry.name);
  return names;
}

}  // namespace bitsweep::server
