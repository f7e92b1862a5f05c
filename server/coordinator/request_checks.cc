// The checks of what callers send that need no database: see request_checks.h.
#include "server/coordinator/request_checks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace bitsweep::server {

constexpr int kMaxPageSize = 1000;

absl::StatusOr<int64_t> ParsePageToken(absl::string_view token) {
  if (token.empty()) return 0;
  int64_t value = 0;
  if (!absl::SimpleAtoi(token, &value) || value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token: '", token, "' is not a token this server returned"));
  }
  return value;
}

absl::StatusOr<int> ResolvePageSize(int requested, int default_size) {
  if (requested < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be >= 0, got ", requested));
  }
  if (requested == 0) return default_size;
  return std::min(requested, kMaxPageSize);
}

// What a worker may report: every number in range, the totals the sums of the layers' parts
// (the cost model adds them up layer by layer), layer names unique. INVALID_ARGUMENT naming the
// field and value otherwise; nothing of a refused report is stored.
absl::Status CheckResult(const v1::TrialResult& r) {
  auto bad = [](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(
        absl::StrCat("result.", field, ": ", value, " ", rule));
  };
  for (auto [field, value] : {std::pair{"top1", r.top1()}, std::pair{"top5", r.top5()}}) {
    if (!std::isfinite(value) || value < 0 || value > 1) {
      return bad(field, value, "is not an accuracy in [0, 1]");
    }
  }
  if (r.top5() < r.top1()) {
    return bad("top5", r.top5(), absl::StrCat("is below top1 ", r.top1()));
  }
  if (std::isfinite(r.loss()) && r.loss() < 0) return bad("loss", r.loss(), "is negative");
  if (r.has_top1_before_finetune() &&
      (!std::isfinite(r.top1_before_finetune()) || r.top1_before_finetune() < 0 ||
       r.top1_before_finetune() > 1)) {
    return bad("top1_before_finetune", r.top1_before_finetune(),
               "is not an accuracy in [0, 1]");
  }
  for (auto [field, value] :
       {std::pair{"samples", r.samples()}, std::pair{"size_bits", r.size_bits()},
        std::pair{"peak_activation_bits", r.peak_activation_bits()},
        std::pair{"activation_bits", r.activation_bits()}, std::pair{"bops", r.bops()},
        std::pair{"macs", r.macs()}}) {
    if (value < 0) return bad(field, value, "is negative");
  }
  for (auto [field, value] : {std::pair{"energy_pj", r.energy_pj()},
                              std::pair{"wall_seconds", r.wall_seconds()},
                              std::pair{"images_per_second", r.images_per_second()}}) {
    if (!std::isfinite(value) || value < 0) return bad(field, value, "is not finite and >= 0");
  }
  if (r.layers_size() == 0) return absl::OkStatus();
  int64_t macs = 0, weight_bits = 0, activation_bits = 0, bops = 0, peak = 0;
  double energy = 0;
  std::set<absl::string_view> names;
  for (int i = 0; i < r.layers_size(); ++i) {
    const v1::LayerResult& layer = r.layers(i);
    const std::string field = absl::StrCat("layers[", i, "]");
    if (layer.name().empty()) return bad(field, "''", "has no name");
    if (!names.insert(layer.name()).second) {
      return bad(field, absl::StrCat("'", layer.name(), "'"), "repeats a layer name");
    }
    for (auto [part, value] :
         {std::pair{".macs", layer.macs()}, std::pair{".weight_count", layer.weight_count()},
          std::pair{".weight_bits", layer.weight_bits()},
          std::pair{".activation_bits", layer.activation_bits()},
          std::pair{".bops", layer.bops()}}) {
      if (value < 0) return bad(absl::StrCat(field, part), value, "is negative");
    }
    if (!std::isfinite(layer.energy_pj()) || layer.energy_pj() < 0) {
      return bad(absl::StrCat(field, ".energy_pj"), layer.energy_pj(),
                 "is not finite and >= 0");
    }
    // Sums in unsigned arithmetic: forged huge values wrap instead of overflowing (UB).
    macs = static_cast<int64_t>(static_cast<uint64_t>(macs) + layer.macs());
    weight_bits = static_cast<int64_t>(static_cast<uint64_t>(weight_bits) + layer.weight_bits());
    activation_bits =
        static_cast<int64_t>(static_cast<uint64_t>(activation_bits) + layer.activation_bits());
    bops = static_cast<int64_t>(static_cast<uint64_t>(bops) + layer.bops());
    peak = std::max(peak, layer.activation_bits());
    energy += layer.energy_pj();
  }
  for (auto [field, total, sum] :
       {std::tuple{"macs", r.macs(), macs}, std::tuple{"size_bits", r.size_bits(), weight_bits},
        std::tuple{"activation_bits", r.activation_bits(), activation_bits},
        std::tuple{"bops", r.bops(), bops}}) {
    if (total != sum) {
      return bad(field, total, absl::StrCat("is not the sum over its layers (", sum, ")"));
    }
  }
  if (r.peak_activation_bits() != peak) {
    return bad("peak_activation_bits", r.peak_activation_bits(),
               absl::StrCat("is not the largest layer's activation_bits (", peak, ")"));
  }
  if (std::abs(r.energy_pj() - energy) > 1e-9 * std::max(1.0, std::abs(energy))) {
    return bad("energy_pj", r.energy_pj(),
               absl::StrCat("is not the sum over its layers (", energy, ")"));
  }
  return absl::OkStatus();
}

// Upper bounds and every check of a sweep spec that needs no data, so that a spec a worker
// would refuse (or spend days on) is refused at submit. INVALID_ARGUMENT naming field and value.
// (budget and population are bounded by the strategies that use them: planner/plan_util.cc.)
constexpr size_t kMaxSweepNameBytes = 256;
constexpr int64_t kMaxBatch = 65'536;
constexpr int64_t kMaxFinetuneSteps = 10'000'000;
constexpr int kMaxMaxAttempts = 100;
constexpr int64_t kMaxCalibrationSamples = 10'000'000;
constexpr int64_t kMaxImageSide = 16'384;
constexpr size_t kMaxHardwareProfileBytes = 1 << 20;

absl::Status CheckSpecLimits(const v1::SweepSpec& spec) {
  auto bad = [](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", value, " ", rule));
  };
  auto in_range = [&](absl::string_view field, int64_t value, int64_t low,
                      int64_t high) -> absl::Status {
    if (value < low || value > high) {
      return bad(field, value, absl::StrCat("is outside [", low, ", ", high, "]"));
    }
    return absl::OkStatus();
  };
  if (spec.name().size() > kMaxSweepNameBytes) {
    return bad("name", absl::StrCat("of ", spec.name().size(), " bytes"),
               absl::StrCat("is longer than ", kMaxSweepNameBytes, " bytes"));
  }
  if (spec.has_error_margin() && !(spec.error_margin() <= 100)) {
    return bad("error_margin", spec.error_margin(), "is above 100 percentage points");
  }
  RETURN_IF_ERROR(in_range("max_attempts", spec.max_attempts(), 0, kMaxMaxAttempts));
  const v1::EvalSettings& settings = spec.settings();
  RETURN_IF_ERROR(in_range("settings.batch", settings.batch(), 0, kMaxBatch));
  if (settings.hardware_profile_json().size() > kMaxHardwareProfileBytes) {
    return bad("settings.hardware_profile_json",
               absl::StrCat("of ", settings.hardware_profile_json().size(), " bytes"),
               absl::StrCat("is longer than ", kMaxHardwareProfileBytes, " bytes"));
  }
  const v1::DatasetRef& dataset = settings.dataset();
  RETURN_IF_ERROR(in_range("settings.dataset.eval_limit", dataset.eval_limit(), 0,
                           std::numeric_limits<int64_t>::max()));
  RETURN_IF_ERROR(in_range("settings.dataset.calibration_samples",
                           dataset.calibration_samples(), 0, kMaxCalibrationSamples));
  RETURN_IF_ERROR(in_range("settings.dataset.resize", dataset.resize(), 0, kMaxImageSide));
  RETURN_IF_ERROR(
      in_range("settings.dataset.center_crop", dataset.center_crop(), 0, kMaxImageSide));
  if (!dataset.channel_order().empty() && dataset.channel_order() != "rgb" &&
      dataset.channel_order() != "bgr") {
    return bad("settings.dataset.channel_order", absl::StrCat("'", dataset.channel_order(), "'"),
               "is neither 'rgb' nor 'bgr'");
  }
  if (!dataset.mean().empty() && !dataset.std().empty() &&
      dataset.mean_size() != dataset.std_size()) {
    return bad("settings.dataset.std", absl::StrCat("has ", dataset.std_size(), " values"),
               absl::StrCat("but mean has ", dataset.mean_size()));
  }
  for (int i = 0; i < dataset.mean_size(); ++i) {
    if (!std::isfinite(dataset.mean(i))) {
      return bad(absl::StrCat("settings.dataset.mean[", i, "]"), dataset.mean(i),
                 "is not finite");
    }
  }
  for (int i = 0; i < dataset.std_size(); ++i) {
    if (!std::isfinite(dataset.std(i)) || dataset.std(i) == 0) {
      return bad(absl::StrCat("settings.dataset.std[", i, "]"), dataset.std(i),
                 "is not a finite non-zero number");
    }
  }
  const v1::FinetuneSpec& finetune = spec.finetune();
  RETURN_IF_ERROR(in_range("finetune.steps", finetune.steps(), 0, kMaxFinetuneSteps));
  RETURN_IF_ERROR(in_range("finetune.batch", finetune.batch(), 0, kMaxBatch));
  for (auto [field, value] : {std::pair{"finetune.learning_rate", finetune.learning_rate()},
                              std::pair{"finetune.weight_decay", finetune.weight_decay()}}) {
    if (!std::isfinite(value) || value < 0) return bad(field, value, "is not finite and >= 0");
  }
  if (!(finetune.momentum() >= 0 && finetune.momentum() < 1)) {
    return bad("finetune.momentum", finetune.momentum(), "is outside [0, 1)");
  }
  return absl::OkStatus();
}

}  // namespace bitsweep::server
