// What follows a trial's end: its result stored (once per dedup key) and checked against the
// model's layers, duplicates waiting on it completed or promoted, failures recorded, and the
// sweep's baseline and best trial kept current.
#include "server/coordinator/sqlite_coordinator.h"

#include <cmath>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/coordinator/dedup.h"

namespace bitsweep::server::coordinator_internal {

absl::Status SqliteCoordinator::OnTrialSucceeded(int64_t sweep_id, int64_t trial_id,
                                                 absl::string_view stage,
                                                 int64_t result_trial_id, Effects& effects,
                                                 const v1::TrialResult* stored) {
  effects.touched_sweeps.insert(sweep_id);
  ResultSummary summary;
  summary.trial_id = trial_id;
  if (stored != nullptr) {  // just stored by this call: no need to read it back
    summary.result.set_top1(stored->top1());
    summary.result.set_top5(stored->top5());
    summary.result.set_size_bits(stored->size_bits());
    summary.result.set_energy_pj(stored->energy_pj());
    summary.result.set_bops(stored->bops());
  } else {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT top1, top5, size_bits, energy_pj, bops FROM results "
                                  "WHERE trial_id = ?1"));
    select.Bind(1, result_trial_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      return absl::InternalError(absl::StrCat("result of trial ", result_trial_id, " missing"));
    }
    summary.result.set_top1(select.Double(0));
    summary.result.set_top5(select.Double(1));
    summary.result.set_size_bits(select.Int64(2));
    summary.result.set_energy_pj(select.Double(3));
    summary.result.set_bops(select.Int64(4));
  }

  std::optional<double> baseline;
  double error_margin = 0;
  std::optional<int64_t> best_trial_id;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT baseline_top1, error_margin, best_trial_id FROM sweeps "
                                  "WHERE id = ?1"));
    select.Bind(1, sweep_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
    baseline = select.OptionalDouble(0);
    error_margin = select.Double(1);
    best_trial_id = select.OptionalInt64(2);
  }
  const double top1 = summary.result.top1();
  if (!baseline.has_value()) {
    if (stage != "baseline") return absl::OkStatus();  // nothing is "within margin" yet
    RETURN_IF_ERROR(
        Exec("UPDATE sweeps SET baseline_top1 = ?2 WHERE id = ?1", sweep_id, top1));
    return RecomputeBestTrial(sweep_id, MarginThreshold(top1, error_margin));
  }
  if (top1 < MarginThreshold(*baseline, error_margin)) return absl::OkStatus();
  if (best_trial_id.has_value()) {
    ASSIGN_OR_RETURN(Statement best,
                     db_->Prepare("SELECT r.top1, r.size_bits FROM trials t JOIN results r "
                                  "ON r.trial_id = coalesce(t.cached_from, t.id) "
                                  "WHERE t.id = ?1"));
    best.Bind(1, *best_trial_id);
    ASSIGN_OR_RETURN(bool row, best.Step());
    if (row) {
      const double best_top1 = best.Double(0);
      const int64_t best_size = best.Int64(1);
      const int64_t size = summary.result.size_bits();
      const bool better = size < best_size || (size == best_size && top1 > best_top1);
      if (!better) return absl::OkStatus();
    }
  }
  return Exec("UPDATE sweeps SET best_trial_id = ?2 WHERE id = ?1", sweep_id, trial_id);
}

absl::Status SqliteCoordinator::RecomputeBestTrial(int64_t sweep_id, double threshold) {
  ASSIGN_OR_RETURN(std::optional<int64_t> best,
                   QueryInt("SELECT t.id FROM trials t JOIN results r "
                            "ON r.trial_id = coalesce(t.cached_from, t.id) "
                            "WHERE t.sweep_id = ?1 AND t.state = 'succeeded' AND r.top1 >= ?2 "
                            "ORDER BY r.size_bits, r.top1 DESC, t.id LIMIT 1",
                            sweep_id, threshold));
  return Exec("UPDATE sweeps SET best_trial_id = ?2 WHERE id = ?1", sweep_id, best);
}

absl::StatusOr<std::set<int64_t>> SqliteCoordinator::CompleteDuplicates(int64_t original_id,
                                                                        int64_t now_ms,
                                                                        Effects& effects) {
  struct Waiting {
    int64_t id, sweep_id;
    std::string stage;
  };
  std::vector<Waiting> waiting;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, sweep_id, stage FROM trials "
                                  "WHERE duplicate_of = ?1 AND state = 'queued' ORDER BY id"));
    select.Bind(1, original_id);
    RETURN_IF_ERROR(select.ForEachRow([&] {
      waiting.push_back({select.Int64(0), select.Int64(1), select.Text(2)});
    }));
  }
  std::set<int64_t> sweeps;
  for (const Waiting& trial : waiting) {
    RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'succeeded', cached = 1, cached_from = ?2, "
                         "duplicate_of = NULL, finished_ms = ?3 WHERE id = ?1",
                         trial.id, original_id, now_ms));
    effects.Move(v1::TRIAL_QUEUED, v1::TRIAL_SUCCEEDED);
    RETURN_IF_ERROR(OnTrialSucceeded(trial.sweep_id, trial.id, trial.stage, original_id, effects));
    sweeps.insert(trial.sweep_id);
  }
  return sweeps;
}

absl::Status SqliteCoordinator::PromoteDuplicates(int64_t original_id, Effects& effects) {
  ASSIGN_OR_RETURN(std::optional<int64_t> successor,
                   QueryInt("SELECT id FROM trials WHERE duplicate_of = ?1 AND state = 'queued' "
                            "ORDER BY id LIMIT 1",
                            original_id));
  if (!successor.has_value()) return absl::OkStatus();
  RETURN_IF_ERROR(Exec("UPDATE trials SET duplicate_of = NULL WHERE id = ?1", *successor));
  RETURN_IF_ERROR(Exec("UPDATE trials SET duplicate_of = ?2 WHERE duplicate_of = ?1 "
                       "AND state = 'queued'",
                       original_id, *successor));
  effects.work_queued = true;
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::FailTrial(int64_t trial_id, int64_t sweep_id, int from_state,
                                          absl::string_view error, int64_t now_ms,
                                          Effects& effects) {
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'failed', error = ?2, finished_ms = ?3, "
                       "lease_deadline_ms = NULL WHERE id = ?1",
                       trial_id, error, now_ms));
  effects.Move(from_state, v1::TRIAL_FAILED);
  effects.touched_sweeps.insert(sweep_id);
  RETURN_IF_ERROR(PromoteDuplicates(trial_id, effects));
  return AdvanceSweep(sweep_id, /*at_submit=*/false, now_ms, effects);
}

absl::Status SqliteCoordinator::StoreResult(int64_t trial_id, const SweepInfo& sweep,
                                            absl::string_view dedup_key,
                                            const v1::ReportRequest& report, int64_t now_ms) {
  v1::TrialResult result = report.result();
  if (result.worker_id().empty()) result.set_worker_id(report.worker_id());
  std::optional<double> loss;
  if (std::isfinite(result.loss())) loss = result.loss();
  std::optional<double> top1_before_finetune;
  if (result.has_top1_before_finetune()) {
    top1_before_finetune = result.top1_before_finetune();
  }
  RETURN_IF_ERROR(Exec(
      "INSERT INTO results(trial_id, dedup_key, lease_id, worker_id, top1, top5, loss, samples, "
      "size_bits, peak_activation_bits, activation_bits, bops, macs, energy_pj, "
      "hardware_profile, wall_seconds, images_per_second, engine_version, "
      "top1_before_finetune, result_proto, created_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
      "?19, ?20, ?21)",
      trial_id, dedup_key, report.lease_id(), report.worker_id(), result.top1(), result.top5(),
      loss, result.samples(), result.size_bits(), result.peak_activation_bits(),
      result.activation_bits(), result.bops(), result.macs(), result.energy_pj(),
      result.hardware_profile(), result.wall_seconds(), result.images_per_second(),
      result.engine_version(), top1_before_finetune, Blob{result.SerializeAsString()}, now_ms));

  auto optional_params = [](const v1::LayerResult& layer, const v1::QuantParams& params,
                            bool present) {
    struct Columns {
      std::optional<std::string> format;
      std::optional<int64_t> bits, fractional_bits, max_exponent;
      std::optional<std::string> scale, zero_point;
    } columns;
    if (!present || params.format().empty()) return columns;
    columns.format = params.format();
    columns.bits = params.bits();
    if (params.has_fractional_bits()) columns.fractional_bits = params.fractional_bits();
    if (params.has_max_exponent()) columns.max_exponent = params.max_exponent();
    if (params.scale_size() > 0) {
      columns.scale = absl::StrCat("[", absl::StrJoin(params.scale(), ","), "]");
    }
    if (params.zero_point_size() > 0) {
      columns.zero_point = absl::StrCat("[", absl::StrJoin(params.zero_point(), ","), "]");
    }
    return columns;
  };
  const v1::EvalSettings settings = NormalizedEvalSettings(sweep.spec.settings());
  for (int i = 0; i < result.layers_size(); ++i) {
    const v1::LayerResult& layer = result.layers(i);
    auto w = optional_params(layer, layer.weights(), layer.has_weights());
    auto in = optional_params(layer, layer.inputs(), layer.has_inputs());
    auto out = optional_params(layer, layer.outputs(), layer.has_outputs());
    RETURN_IF_ERROR(Exec(
        "INSERT INTO trial_layers(trial_id, layer_index, name, layer_class, weights_format, "
        "weights_bits, weights_fractional_bits, weights_scale, weights_zero_point, "
        "weights_max_exponent, inputs_format, inputs_bits, inputs_fractional_bits, "
        "inputs_scale, inputs_zero_point, outputs_format, outputs_bits, "
        "outputs_fractional_bits, outputs_scale, outputs_zero_point, macs, weight_count, "
        "weight_bits, activation_bits, bops, energy_pj) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
        "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
        trial_id, static_cast<int64_t>(i), layer.name(), layer.layer_class(), w.format, w.bits,
        w.fractional_bits, w.scale, w.zero_point, w.max_exponent, in.format, in.bits,
        in.fractional_bits, in.scale, in.zero_point, out.format, out.bits, out.fractional_bits,
        out.scale, out.zero_point, layer.macs(), layer.weight_count(), layer.weight_bits(),
        layer.activation_bits(), layer.bops(), layer.energy_pj()));
    const bool has_input = layer.input_range().count() > 0;
    const bool has_output = layer.output_range().count() > 0;
    if (!has_input && !has_output) continue;
    auto range_value = [](bool has, double value) {
      return has ? std::optional<double>(value) : std::nullopt;
    };
    auto range_count = [](bool has, int64_t value) {
      return has ? std::optional<int64_t>(value) : std::nullopt;
    };
    RETURN_IF_ERROR(Exec(
        "INSERT OR REPLACE INTO calibration_stats(model_hash, dataset, calibration_samples, "
        "layer, input_min, input_max, input_count, output_min, output_max, output_count, "
        "trial_id, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        sweep.spec.model_hash(), settings.dataset().train(),
        settings.dataset().calibration_samples(), layer.name(),
        range_value(has_input, layer.input_range().min()),
        range_value(has_input, layer.input_range().max()),
        range_count(has_input, layer.input_range().count()),
        range_value(has_output, layer.output_range().min()),
        range_value(has_output, layer.output_range().max()),
        range_count(has_output, layer.output_range().count()), trial_id, now_ms));
  }
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::CheckLayersOfModel(const std::string& model_hash,
                                                   const v1::TrialResult& result) {
  if (result.layers_size() == 0) return absl::OkStatus();
  auto known = model_layers_.find(model_hash);
  if (known == model_layers_.end()) {
    ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare("SELECT name, layer_class FROM trial_layers WHERE trial_id = ("
                     "SELECT t.id FROM sweeps s JOIN trials t ON t.sweep_id = s.id "
                     "JOIN results r ON r.trial_id = t.id WHERE s.model_hash = ?1 "
                     "AND EXISTS (SELECT 1 FROM trial_layers l WHERE l.trial_id = t.id) "
                     "LIMIT 1) ORDER BY layer_index"));
    select.Bind(1, model_hash);
    std::vector<std::pair<std::string, std::string>> layers;
    while (true) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      layers.emplace_back(select.Text(0), select.Text(1));
    }
    if (layers.empty()) return absl::OkStatus();  // nothing known about this model yet
    known = model_layers_.emplace(model_hash, std::move(layers)).first;
  }
  const auto& layers = known->second;
  auto names = [](auto begin, auto end, auto name_of) {
    std::vector<std::string> out;
    for (auto it = begin; it != end; ++it) out.push_back(name_of(*it));
    return absl::StrJoin(out, ",");
  };
  bool same = static_cast<int>(layers.size()) == result.layers_size();
  for (int i = 0; same && i < result.layers_size(); ++i) {
    same = layers[i].first == result.layers(i).name() &&
           layers[i].second == result.layers(i).layer_class();
  }
  if (same) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "result.layers: [",
      names(result.layers().begin(), result.layers().end(),
            [](const v1::LayerResult& l) { return absl::StrCat(l.name(), ":", l.layer_class()); }),
      "] are not the model's quantizable layers [",
      names(layers.begin(), layers.end(),
            [](const auto& l) { return absl::StrCat(l.first, ":", l.second); }),
      "]"));
}

}  // namespace bitsweep::server::coordinator_internal
