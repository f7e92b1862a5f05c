// The grid strategy: the fp32 baseline, then the Cartesian product of SearchSpace.axes in one
// stage "grid". Each axis sets one role of one selector ("conv weights", "layers.fc1
// activations") to each of its formats; the product enumerates every combination.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/planner/plan_util.h"
#include "quant/format.h"

namespace bitsweep::server::plan {
namespace {

constexpr char kGridStage[] = "grid";
// A product this large is almost surely a mistake; ask for a smaller space (or `random`).
constexpr int64_t kMaxGridTrials = 10000;

std::vector<std::string> RolesOf(const std::string& role) {
  if (role == "activations") return {"inputs", "outputs"};
  return {role};
}

std::string AxisField(int i) { return absl::StrCat("space.axes[", i, "]"); }

class GridStrategy : public Strategy {
 public:
  absl::Status Validate(const v1::SweepSpec& spec) const override {
    RETURN_IF_ERROR(ValidateCommon(spec));
    const v1::SearchSpace& space = spec.space();
    if (space.axes_size() == 0) {
      return absl::InvalidArgumentError(
          "space.axes: the grid strategy needs at least one axis (selector, role, formats)");
    }
    for (auto [field, size] : {std::pair{"space.weight_formats", space.weight_formats_size()},
                               std::pair{"space.activation_formats",
                                         space.activation_formats_size()}}) {
      if (size > 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": the grid strategy searches space.axes only; put the formats on an axis"));
      }
    }
    std::vector<std::pair<std::string, std::string>> claimed;  // (selector, concrete role)
    int64_t product = 1;
    for (int i = 0; i < space.axes_size(); ++i) {
      const v1::GridAxis& axis = space.axes(i);
      const std::string field = AxisField(i);
      const std::string& selector = axis.selector();
      const bool is_layer = absl::StartsWith(selector, "layers.") && selector.size() > 7;
      if (selector != "default" && selector != "conv" && selector != "fc" && !is_layer) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".selector: '", selector,
            "' is not one of default, conv, fc, layers.NAME (an ONNX node name)"));
      }
      const std::string& role = axis.role();
      if (role != "weights" && role != "inputs" && role != "outputs" && role != "activations") {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".role: '", role, "' is not one of weights, inputs, outputs, activations"));
      }
      for (const std::string& r : RolesOf(role)) {
        auto key = std::make_pair(selector, r);
        if (std::find(claimed.begin(), claimed.end(), key) != claimed.end()) {
          return absl::InvalidArgumentError(absl::StrCat(
              field, ": another axis already sets ", selector, " ", r,
              " (each selector and role may appear on one axis)"));
        }
        claimed.push_back(key);
      }
      if (axis.formats_size() == 0) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".formats: the axis lists no formats"));
      }
      std::vector<std::string> canonical;
      for (int j = 0; j < axis.formats_size(); ++j) {
        const std::string format_field = absl::StrCat(field, ".formats[", j, "]");
        RETURN_IF_ERROR(ValidateSpaceFormat(axis.formats(j), format_field, role != "weights"));
        const std::string c =
            quant::FormatToString(*quant::ParseFormat(axis.formats(j)));
        if (std::find(canonical.begin(), canonical.end(), c) != canonical.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat(format_field, ": '", axis.formats(j), "' is listed twice on this axis"));
        }
        canonical.push_back(c);
      }
      product *= axis.formats_size();
      if (product > kMaxGridTrials) {
        return absl::InvalidArgumentError(absl::StrCat(
            "space.axes: the grid has more than ", kMaxGridTrials,
            " combinations; narrow it or use the random strategy"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<PlanStep> Next(const v1::SweepSpec& spec,
                                const std::vector<TrialOutcome>& outcomes) const override {
    ASSIGN_OR_RETURN(BaselineOrStep base, ResolveBaseline(outcomes));
    if (base.step) return *base.step;
    if (HasStage(outcomes, kGridStage)) return DoneStep();

    const v1::SearchSpace& space = spec.space();
    std::vector<std::string> layer_names;
    for (const v1::LayerResult& l : base.baseline.layers) layer_names.push_back(l.name());
    for (int i = 0; i < space.axes_size(); ++i) {
      const std::string& selector = space.axes(i).selector();
      if (!absl::StartsWith(selector, "layers.")) continue;
      const std::string name = selector.substr(7);
      if (std::find(layer_names.begin(), layer_names.end(), name) == layer_names.end()) {
        PlanStep failed;
        failed.failure = absl::StrCat(AxisField(i), ".selector names layer '", name,
                                      "', which the model does not have (quantizable layers: ",
                                      absl::StrJoin(layer_names, ", "), ")");
        return failed;
      }
    }

    // Odometer over the axes: the last axis varies fastest.
    std::vector<int> pick(space.axes_size(), 0);
    std::vector<v1::TrialSpec> trials;
    while (true) {
      ConfigJson config = ConfigJson::object();
      std::vector<std::string> parts;
      for (int i = 0; i < space.axes_size(); ++i) {
        const v1::GridAxis& axis = space.axes(i);
        const std::string format =
            quant::FormatToString(*quant::ParseFormat(axis.formats(pick[i])));
        SetRole(config, axis.selector(), axis.role(), format);
        parts.push_back(absl::StrCat(axis.selector(), " ", axis.role(), " ", format));
      }
      ASSIGN_OR_RETURN(std::string canonical, CanonicalConfig(config));
      trials.push_back(MakeTrial(kGridStage, absl::StrJoin(parts, ", "), canonical));
      int i = space.axes_size() - 1;
      while (i >= 0 && ++pick[i] == space.axes(i).formats_size()) pick[i--] = 0;
      if (i < 0) break;
    }
    return StageStep(kGridStage, std::move(trials));
  }
};

}  // namespace

std::unique_ptr<Strategy> NewGridStrategy() { return std::make_unique<GridStrategy>(); }

}  // namespace bitsweep::server::plan
