// The evolutionary strategy (NSGA-II style: Deb, Pratap, Agarwal and Meyarivan, "A fast and
// elitist multiobjective genetic algorithm: NSGA-II", 2002), for spaces too large for grid or
// sensitivity and where random sampling wastes its budget on configs far from the frontier:
//
//   stage "baseline"       the fp32 baseline (and activation ranges);
//   stage "generation 1"   SweepSpec.population (0: 16) configs: every layer at one width, for
//                          widths spread over the candidates, then uniform samples as in random;
//   stage "generation K"   children bred from the configs evaluated so far, until
//                          SweepSpec.budget (0: 64) configs were evaluated;
//   stage "finetune"       (finetune.steps > 0) up to 4 points spread along the final front of
//                          configs within the error margin, fine-tuned.
//
// A config is a genome: per quantizable layer, one weight and one activation candidate (inputs
// and outputs together), as in random. Breeding generation K > 1:
//   1. Rank every succeeded config of the earlier generations in non-dominated fronts over the
//      sweep's objectives (SweepSpec.objectives; default top1 and size), the configs within the
//      error margin first: their fronts come before any front of the others. Within a front, the
//      crowding distance (the most isolated points first) breaks ties, which keeps the front
//      spread out.
//   2. The best `population` of them are the parents (elitism: a good config never drops out).
//   3. Each child: two binary tournaments pick two parents; uniform crossover takes each choice
//      from either; each choice then mutates with probability 1 / (2 x layers) to another
//      candidate. Children already evaluated, or bred twice, are discarded; after 50 tries per
//      child the generation is topped up with uniform samples.
// Deterministic: the generator of generation K is seeded by (SweepSpec.seed, K), and the
// outcomes are the only state. The search ends early when no unseen config can be found (a
// space smaller than the budget is then fully evaluated).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/frontier/frontier.h"
#include "server/planner/plan_util.h"

namespace bitsweep::server::plan {
namespace {

constexpr char kGenerationPrefix[] = "generation ";
constexpr int64_t kDefaultBudget = 64;
constexpr int kDefaultPopulation = 16;
constexpr int kMaxPopulation = 1000;
constexpr size_t kMaxFinetunePoints = 4;
constexpr int kBreedTriesPerChild = 50;
constexpr int kSampleDrawsPerChild = 20;

// A succeeded config of an earlier generation, with what selection needs.
struct Member {
  const TrialOutcome* outcome = nullptr;
  Genome genome;
  std::vector<double> costs;  // every objective minimized (accuracies negated)
  bool within_margin = false;
  int rank = 0;               // constrained-domination front, 0 best
  double crowding = 0;
};

int GenerationOf(const std::string& stage) {
  absl::string_view rest = stage;
  int generation = 0;
  if (!absl::ConsumePrefix(&rest, kGenerationPrefix) || !absl::SimpleAtoi(rest, &generation)) {
    return 0;
  }
  return generation;
}

// Crowding distance of each member of one front: per objective, the normalized gap between its
// neighbours; the extremes of any objective are infinitely far.
void AssignCrowding(std::vector<Member*>& front) {
  for (Member* m : front) m->crowding = 0;
  if (front.empty()) return;
  const size_t objectives = front[0]->costs.size();
  for (size_t k = 0; k < objectives; ++k) {
    std::sort(front.begin(), front.end(), [k](const Member* a, const Member* b) {
      if (a->costs[k] != b->costs[k]) return a->costs[k] < b->costs[k];
      return a->outcome->trial_id < b->outcome->trial_id;
    });
    const double span = front.back()->costs[k] - front.front()->costs[k];
    front.front()->crowding = std::numeric_limits<double>::infinity();
    front.back()->crowding = std::numeric_limits<double>::infinity();
    if (span <= 0) continue;
    for (size_t i = 1; i + 1 < front.size(); ++i) {
      front[i]->crowding += (front[i + 1]->costs[k] - front[i - 1]->costs[k]) / span;
    }
  }
}

// Assigns non-dominated fronts over the costs to `group`, numbered from `rank`, with crowding
// distances; returns the next free rank.
int AssignFronts(std::vector<Member*> group, int rank) {
  while (!group.empty()) {
    std::vector<std::vector<double>> points;
    for (const Member* m : group) points.push_back(m->costs);
    std::vector<bool> in_front(group.size(), false);
    for (size_t i : NonDominated(points)) in_front[i] = true;
    std::vector<Member*> front, rest;
    for (size_t i = 0; i < group.size(); ++i) (in_front[i] ? front : rest).push_back(group[i]);
    for (Member* m : front) m->rank = rank;
    AssignCrowding(front);
    group = std::move(rest);
    ++rank;
  }
  return rank;
}

// Ranks and crowds `members`, then sorts them best first: rank, then crowding (larger first),
// then trial id. Configs within the margin take the first fronts; the others follow in fronts of
// their own (not by shortfall alone: while nothing meets the margin, that would breed only
// towards accuracy and lose the size end of the trade-off).
void RankMembers(std::vector<Member>& members) {
  std::vector<Member*> feasible, infeasible;
  for (Member& m : members) (m.within_margin ? feasible : infeasible).push_back(&m);
  AssignFronts(infeasible, AssignFronts(feasible, 0));
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) {
    if (a.rank != b.rank) return a.rank < b.rank;
    if (a.crowding != b.crowding) return a.crowding > b.crowding;
    return a.outcome->trial_id < b.outcome->trial_id;
  });
}

class EvolutionaryStrategy : public Strategy {
 public:
  absl::Status Validate(const v1::SweepSpec& spec) const override {
    RETURN_IF_ERROR(ValidateBudgetedSearch(spec, "evolutionary"));
    if (spec.population() != 0 &&
        (spec.population() < 2 || spec.population() > kMaxPopulation)) {
      return absl::InvalidArgumentError(absl::StrCat("population: must be 0 (meaning ",
                                                     kDefaultPopulation, ") or 2 to ",
                                                     kMaxPopulation, ", got ",
                                                     spec.population()));
    }
    return SweepObjectives(spec).status();
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    ASSIGN_OR_RETURN(BaselineOrStep base, ResolveBaseline(outcomes));
    if (base.step) return *base.step;
    if (HasStage(outcomes, kFinetuneStage)) return DoneStep();

    ASSIGN_OR_RETURN(std::vector<Candidate> weights, WeightCandidates(spec));
    ASSIGN_OR_RETURN(std::vector<Candidate> activations, ActivationCandidates(spec));
    ASSIGN_OR_RETURN(std::vector<v1::Objective> objectives, SweepObjectives(spec));
    const int64_t budget = spec.budget() > 0 ? spec.budget() : kDefaultBudget;
    const int population = spec.population() > 0 ? spec.population() : kDefaultPopulation;
    const Baseline& baseline = base.baseline;
    const double margin_pp = ErrorMarginPp(spec);

    int generations = 0;
    int64_t evaluated = 0;
    std::set<std::string> seen;
    std::vector<Member> members;
    for (const TrialOutcome& o : outcomes) {
      seen.insert(o.spec.config_json());
      const int generation = GenerationOf(o.spec.stage());
      if (generation == 0) continue;
      generations = std::max(generations, generation);
      ++evaluated;
      if (!o.succeeded) continue;
      std::optional<Genome> genome =
          GenomeOfConfig(o.spec.config_json(), baseline.layers, weights, activations);
      if (!genome.has_value()) continue;  // not a config of this space (cannot happen)
      Member m;
      m.outcome = &o;
      m.genome = std::move(*genome);
      for (v1::Objective objective : objectives) {
        const double value = ObjectiveValue(o.result, objective);
        m.costs.push_back(IsMaximized(objective) ? -value : value);
      }
      m.within_margin = WithinMargin(o.result.top1(), baseline.top1, margin_pp);
      members.push_back(std::move(m));
    }
    RankMembers(members);

    const int64_t remaining = budget - evaluated;
    if (remaining <= 0) return Finish(spec, members);
    const int generation = generations + 1;
    const size_t wanted = static_cast<size_t>(std::min<int64_t>(population, remaining));
    SplitMix64 rng(spec.seed() ^ (kSplitMix64Gamma * static_cast<uint64_t>(generation)));
    std::vector<v1::TrialSpec> trials;
    const std::string stage = absl::StrCat(kGenerationPrefix, generation);
    auto add_trial = [&](const Genome& child, const char* how) -> absl::Status {
      ASSIGN_OR_RETURN(GenomeConfig config,
                       ConfigOfGenome(child, baseline.layers, weights, activations));
      if (!seen.insert(config.canonical).second) return absl::OkStatus();
      trials.push_back(MakeTrial(stage,
                                 absl::StrCat(stage, " #", trials.size() + 1, " (", how, "): ",
                                              config.description),
                                 config.canonical));
      return absl::OkStatus();
    };
    if (generation == 1) {
      // Seeds: every layer at the same width, from the widest candidates to the narrowest,
      // evenly spread. They span the trade-off (as Ristretto's uniform width sweeps do) and give
      // crossover mixed-precision material near the frontier; random samples fill the rest.
      const size_t levels = std::max(weights.size(), activations.size());
      const size_t seeds = std::min(levels, wanted);
      for (size_t k = 0; k < seeds; ++k) {
        const size_t level = seeds == 1 ? 0 : k * (levels - 1) / (seeds - 1);
        const LayerChoice choice = {
            static_cast<int>(level * (weights.size() - 1) / std::max<size_t>(levels - 1, 1)),
            static_cast<int>(level * (activations.size() - 1) / std::max<size_t>(levels - 1, 1))};
        RETURN_IF_ERROR(add_trial(Genome(baseline.layers.size(), choice), "uniform"));
      }
    }
    const size_t parents = std::min(members.size(), static_cast<size_t>(population));
    if (parents >= 2) {
      const size_t layers = baseline.layers.size();
      const double mutation = 1.0 / (2.0 * static_cast<double>(layers));
      auto mutate = [&](int value, size_t candidates) {
        if (candidates < 2 || rng.Uniform() >= mutation) return value;
        return static_cast<int>((value + 1 + rng.Below(candidates - 1)) % candidates);
      };
      // Members are sorted best first: the better of two is the one with the lower index.
      auto tournament = [&] {
        return std::min(rng.Below(parents), rng.Below(parents));
      };
      for (int tries = 0; trials.size() < wanted &&
                          tries < kBreedTriesPerChild * static_cast<int>(wanted);
           ++tries) {
        const Genome& a = members[tournament()].genome;
        const Genome& b = members[tournament()].genome;
        Genome child(layers);
        for (size_t i = 0; i < layers; ++i) {
          child[i].weights = mutate(rng.Below(2) ? a[i].weights : b[i].weights, weights.size());
          child[i].activations =
              mutate(rng.Below(2) ? a[i].activations : b[i].activations, activations.size());
        }
        RETURN_IF_ERROR(add_trial(child, "bred"));
      }
    }
    for (int draws = 0; trials.size() < wanted &&
                        draws < kSampleDrawsPerChild * static_cast<int>(wanted);
         ++draws) {
      RETURN_IF_ERROR(add_trial(
          RandomGenome(rng, baseline.layers.size(), weights.size(), activations.size()),
          "sampled"));
    }
    if (trials.empty()) return Finish(spec, members);  // the space is exhausted
    return StageStep(stage, std::move(trials));
  }

 private:
  // After the last generation: fine-tune up to kMaxFinetunePoints configs spread along the
  // first front within the margin (when fine-tuning is asked for and there is one), else done.
  static PlanStep Finish(const v1::SweepSpec& spec, const std::vector<Member>& ranked) {
    if (EffectiveFinetune(spec).steps() <= 0) return DoneStep();
    std::vector<const Member*> front;
    for (const Member& m : ranked) {
      if (m.rank == 0 && m.within_margin) front.push_back(&m);
    }
    if (front.empty()) return DoneStep();
    std::sort(front.begin(), front.end(), [](const Member* a, const Member* b) {
      if (a->costs[0] != b->costs[0]) return a->costs[0] < b->costs[0];
      return a->outcome->trial_id < b->outcome->trial_id;
    });
    std::vector<const Member*> chosen;
    if (front.size() <= kMaxFinetunePoints) {
      chosen = front;
    } else {
      for (size_t i = 0; i < kMaxFinetunePoints; ++i) {
        chosen.push_back(front[i * (front.size() - 1) / (kMaxFinetunePoints - 1)]);
      }
    }
    std::vector<v1::TrialSpec> tuned;
    for (const Member* m : chosen) {
      tuned.push_back(FinetuneTrial(
          m->outcome->spec, spec,
          absl::StrCat("finetune ", EffectiveFinetune(spec).steps(), " steps: ", m->outcome->spec.label())));
    }
    return StageStep(kFinetuneStage, std::move(tuned));
  }
};

}  // namespace

std::unique_ptr<Strategy> NewEvolutionaryStrategy() {
  return std::make_unique<EvolutionaryStrategy>();
}

}  // namespace bitsweep::server::plan
