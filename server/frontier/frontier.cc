// Pareto frontiers over trial results: the N-objective non-dominated set, the 2-D hypervolume and
// the Frontier message the coordinator pushes to watchers (see frontier.h for the contract).
#include "server/frontier/frontier.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bitsweep::server {
namespace {

constexpr v1::Objective kAllObjectives[] = {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_TOP5,
                                            v1::OBJECTIVE_SIZE, v1::OBJECTIVE_ENERGY,
                                            v1::OBJECTIVE_BOPS};

std::string KnownObjectiveNames() {
  std::vector<std::string> names;
  for (v1::Objective o : kAllObjectives) names.push_back(ObjectiveName(o));
  return absl::StrJoin(names, ", ");
}

// a dominates b: <= everywhere and < somewhere (all coordinates minimized).
bool Dominates(const std::vector<double>& a, const std::vector<double>& b) {
  bool strictly_better_somewhere = false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k] > b[k]) return false;
    if (a[k] < b[k]) strictly_better_somewhere = true;
  }
  return strictly_better_somewhere;
}

}  // namespace

std::vector<size_t> NonDominated(const std::vector<std::vector<double>>& points) {
  // O(n^2 d): sweeps hold hundreds to a few thousand trials, where this takes milliseconds and
  // stays obviously correct for any number of objectives.
  std::vector<size_t> kept;
  for (size_t i = 0; i < points.size(); ++i) {
    bool keep = true;
    for (size_t j = 0; j < points.size() && keep; ++j) {
      if (j == i) continue;
      if (Dominates(points[j], points[i])) keep = false;
      if (j < i && points[j] == points[i]) keep = false;  // an earlier exact duplicate wins
    }
    if (keep) kept.push_back(i);
  }
  return kept;
}

double Hypervolume2D(const std::vector<std::array<double, 2>>& points,
                     std::array<double, 2> reference) {
  std::vector<std::array<double, 2>> inside;
  for (const auto& p : points) {
    if (p[0] < reference[0] && p[1] < reference[1]) inside.push_back(p);
  }
  std::sort(inside.begin(), inside.end());  // by x, then y
  // Sweep in x order: each point that lowers the best y so far adds the slab between its y and
  // the previous best y, reaching from its x to the reference x.
  double area = 0;
  double best_y = reference[1];
  for (const auto& p : inside) {
    if (p[1] < best_y) {
      area += (reference[0] - p[0]) * (best_y - p[1]);
      best_y = p[1];
    }
  }
  return area;
}

double ObjectiveValue(const v1::TrialResult& result, v1::Objective objective) {
  switch (objective) {
    case v1::OBJECTIVE_TOP1: return result.top1();
    case v1::OBJECTIVE_TOP5: return result.top5();
    case v1::OBJECTIVE_SIZE: return static_cast<double>(result.size_bits());
    case v1::OBJECTIVE_ENERGY: return result.energy_pj();
    case v1::OBJECTIVE_BOPS: return static_cast<double>(result.bops());
    default: return 0;
  }
}

bool IsMaximized(v1::Objective objective) {
  return objective == v1::OBJECTIVE_TOP1 || objective == v1::OBJECTIVE_TOP5;
}

const char* ObjectiveName(v1::Objective objective) {
  switch (objective) {
    case v1::OBJECTIVE_TOP1: return "top1";
    case v1::OBJECTIVE_TOP5: return "top5";
    case v1::OBJECTIVE_SIZE: return "size";
    case v1::OBJECTIVE_ENERGY: return "energy";
    case v1::OBJECTIVE_BOPS: return "bops";
    default: return "unspecified";
  }
}

absl::StatusOr<v1::Objective> ParseObjective(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (v1::Objective o : kAllObjectives) {
    if (lower == ObjectiveName(o)) return o;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown objective '", name,
                                                 "' (known: ", KnownObjectiveNames(), ")"));
}

std::vector<v1::Objective> ToObjectives(const google::protobuf::RepeatedField<int>& values) {
  std::vector<v1::Objective> objectives;
  objectives.reserve(values.size());
  for (int value : values) objectives.push_back(static_cast<v1::Objective>(value));
  return objectives;
}

const std::vector<v1::Objective>& DefaultSweepObjectives() {
  static const auto* const objectives =
      new std::vector<v1::Objective>{v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE};
  return *objectives;
}

absl::StatusOr<std::vector<v1::Objective>> SweepObjectives(const v1::SweepSpec& spec) {
  return ResolveObjectives(ToObjectives(spec.objectives()), DefaultSweepObjectives());
}

absl::StatusOr<std::vector<v1::Objective>> ResolveObjectives(
    const std::vector<v1::Objective>& requested, const std::vector<v1::Objective>& defaults) {
  if (requested.empty()) return defaults;
  for (size_t i = 0; i < requested.size(); ++i) {
    const v1::Objective o = requested[i];
    if (std::find(std::begin(kAllObjectives), std::end(kAllObjectives), o) ==
        std::end(kAllObjectives)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "objectives[", i, "]: unspecified or unknown objective (known: ",
          KnownObjectiveNames(), ")"));
    }
    if (std::find(requested.begin(), requested.begin() + i, o) != requested.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("objectives[", i, "]: '", ObjectiveName(o), "' is listed twice"));
    }
  }
  if (requested.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "objectives: a frontier needs at least two objectives, got ", requested.size(),
        " (e.g. top1 and size)"));
  }
  return requested;
}

bool WithinMargin(double top1, double baseline_top1, double margin_pp) {
  return top1 >= baseline_top1 - margin_pp / 100.0 - 1e-9;
}

v1::Frontier BuildFrontier(int64_t sweep_id, const std::vector<v1::Trial>& trials,
                           const std::vector<v1::Objective>& objectives,
                           std::optional<double> baseline_top1, double margin_pp,
                           bool within_margin_only) {
  v1::Frontier frontier;
  frontier.set_sweep_id(sweep_id);
  for (v1::Objective o : objectives) frontier.add_objectives(o);
  if (baseline_top1) frontier.set_baseline_top1(*baseline_top1);
  frontier.set_error_margin(margin_pp);

  // Reference of each cost axis: its largest value over every succeeded trial.
  std::vector<double> max_value(objectives.size(), 0.0);
  std::vector<const v1::Trial*> competing;
  std::vector<bool> competing_within_margin;
  for (const v1::Trial& trial : trials) {
    if (trial.state() != v1::TRIAL_SUCCEEDED) continue;
    for (size_t k = 0; k < objectives.size(); ++k) {
      max_value[k] = std::max(max_value[k], ObjectiveValue(trial.result(), objectives[k]));
    }
    const bool within =
        baseline_top1.has_value() && WithinMargin(trial.result().top1(), *baseline_top1, margin_pp);
    if (within_margin_only && !within) continue;
    competing.push_back(&trial);
    competing_within_margin.push_back(within);
  }

  std::vector<std::vector<double>> minimized;
  for (const v1::Trial* trial : competing) {
    std::vector<double> point;
    for (v1::Objective o : objectives) {
      const double v = ObjectiveValue(trial->result(), o);
      point.push_back(IsMaximized(o) ? -v : v);
    }
    minimized.push_back(std::move(point));
  }
  std::vector<size_t> kept = NonDominated(minimized);
  std::sort(kept.begin(), kept.end(), [&](size_t a, size_t b) {
    if (minimized[a] != minimized[b]) return minimized[a] < minimized[b];  // lexicographic
    return competing[a]->id() < competing[b]->id();
  });

  for (size_t i : kept) {
    const v1::Trial& trial = *competing[i];
    v1::FrontierPoint* point = frontier.add_points();
    point->set_trial_id(trial.id());
    for (v1::Objective o : objectives) point->add_values(ObjectiveValue(trial.result(), o));
    point->set_within_margin(competing_within_margin[i]);
    *point->mutable_spec() = trial.spec();
    *point->mutable_result() = trial.result();
  }

  if (objectives.size() == 2) {
    std::vector<std::array<double, 2>> unit_points;
    bool degenerate = false;
    for (size_t k = 0; k < 2; ++k) {
      if (!IsMaximized(objectives[k]) && !(max_value[k] > 0)) degenerate = true;
    }
    if (!degenerate) {
      for (size_t i : kept) {
        std::array<double, 2> p{};
        for (size_t k = 0; k < 2; ++k) {
          const double v = ObjectiveValue(competing[i]->result(), objectives[k]);
          p[k] = IsMaximized(objectives[k]) ? 1.0 - v : v / max_value[k];
        }
        unit_points.push_back(p);
      }
    }
    frontier.set_hypervolume(degenerate ? 0.0 : Hypervolume2D(unit_points, {1.0, 1.0}));
  }
  return frontier;
}

}  // namespace bitsweep::server
