#include "client/service_commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/dataset_flags.h"
#include "client/flag_values.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "server/frontier/frontier.h"

// Shared with the engine commands (engine_commands.cc).
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int64_t, batch);
ABSL_DECLARE_FLAG(std::string, hardware_profile);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(double, lr);

ABSL_FLAG(std::string, server, "", "coordinator address host:port (submit, watch, ...)");
ABSL_FLAG(std::string, token, "", "bearer token for the coordinator, when it requires one");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificates: connect with TLS");
ABSL_FLAG(std::string, model_hash, "", "an uploaded model's hash (instead of --model)");
ABSL_FLAG(std::string, strategy, "ristretto",
          "grid | ristretto | sensitivity | random | evolutionary");
ABSL_FLAG(double, error_margin, 1.0, "allowed top-1 drop against fp32, percentage points");
ABSL_FLAG(std::string, weight_formats, "",
          "candidate weight formats, comma-separated (default fixed:16,fixed:8,fixed:4,fixed:2)");
ABSL_FLAG(std::string, activation_formats, "", "candidate activation formats (same default)");
ABSL_FLAG(std::string, grid, "",
          "grid axes 'SELECTOR.ROLE=F1,F2;...' with SELECTOR default|conv|fc|layers.NAME and "
          "ROLE weights|inputs|outputs|activations");
ABSL_FLAG(std::string, objectives, "", "frontier objectives, e.g. top1,size (top1 top5 size "
          "energy bops)");
ABSL_FLAG(int64_t, finetune_steps, 0, "fine-tuning steps for the stages that fine-tune");
ABSL_FLAG(int64_t, budget, 0,
          "random, evolutionary: configs to evaluate (default 32 for random, 64 for evolutionary)");
ABSL_FLAG(int32_t, population, 0, "evolutionary: configs per generation (default 16)");
ABSL_FLAG(int32_t, max_attempts, 0, "attempts per trial before it fails (default 3)");
ABSL_FLAG(std::string, name, "", "a name for the sweep");
ABSL_FLAG(std::string, sweep_file, "",
          "sweep spec as JSON (protobuf JSON of bitsweep.v1.SweepSpec); flags given override");
ABSL_FLAG(bool, wait, false, "submit: follow the sweep until it ends, then print its frontier");
ABSL_FLAG(int64_t, sweep, 0, "sweep id");
ABSL_FLAG(int64_t, trial, 0, "trial id");
ABSL_FLAG(std::string, format, "table", "output: table | csv | json");
ABSL_FLAG(std::string, plot, "", "frontier: also draw it as an SVG file");
ABSL_FLAG(bool, within_margin_only, false, "only trials within the error margin");
ABSL_FLAG(std::string, state, "", "trials: queued | running | succeeded | failed | cancelled");
ABSL_FLAG(std::string, stage, "", "trials: only this planner stage");
ABSL_FLAG(std::string, qdq, "", "export: also write a QDQ ONNX model here (integer formats)");

namespace bitsweep::cli {
namespace {

using Json = std::string;

absl::StatusOr<std::unique_ptr<ExplorerClient>> ConnectFromFlags() {
  ConnectOptions options;
  options.token = absl::GetFlag(FLAGS_token);
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  return ExplorerClient::Connect(absl::GetFlag(FLAGS_server), options);
}

absl::StatusOr<std::vector<v1::Objective>> ObjectivesFromFlag() {
  std::vector<v1::Objective> objectives;
  for (const std::string& name : SplitList(absl::GetFlag(FLAGS_objectives))) {
    ASSIGN_OR_RETURN(v1::Objective o, server::ParseObjective(name));
    objectives.push_back(o);
  }
  return objectives;
}

absl::StatusOr<std::vector<v1::GridAxis>> GridFromFlag(const std::string& text) {
  std::vector<v1::GridAxis> axes;
  for (absl::string_view axis_text : absl::StrSplit(text, ';', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(axis_text, absl::MaxSplits('=', 1));
    const size_t dot = kv.first.rfind('.');
    if (dot == std::string::npos || kv.second.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--grid: '", axis_text, "' is not SELECTOR.ROLE=FORMAT,FORMAT (e.g. conv.weights=fixed:8,fixed:4)"));
    }
    v1::GridAxis axis;
    axis.set_selector(std::string(absl::StripAsciiWhitespace(kv.first.substr(0, dot))));
    axis.set_role(std::string(absl::StripAsciiWhitespace(kv.first.substr(dot + 1))));
    for (const std::string& f : SplitList(kv.second)) axis.add_formats(f);
    axes.push_back(std::move(axis));
  }
  return axes;
}

std::string Percent(double fraction) { return absl::StrFormat("%.2f%%", 100 * fraction); }

std::string Bits(int64_t bits) {
  if (bits >= 8 * 1024 * 1024) return absl::StrFormat("%.2f MiB", bits / 8.0 / 1024 / 1024);
  if (bits >= 8 * 1024) return absl::StrFormat("%.1f KiB", bits / 8.0 / 1024);
  return absl::StrFormat("%d bits", bits);
}

std::string Duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string StateName(v1::SweepState s) {
  switch (s) {
    case v1::SWEEP_QUEUED: return "queued";
    case v1::SWEEP_RUNNING: return "running";
    case v1::SWEEP_SUCCEEDED: return "succeeded";
    case v1::SWEEP_FAILED: return "failed";
    case v1::SWEEP_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

std::string TrialStateName(v1::TrialState s) {
  switch (s) {
    case v1::TRIAL_QUEUED: return "queued";
    case v1::TRIAL_RUNNING: return "running";
    case v1::TRIAL_SUCCEEDED: return "succeeded";
    case v1::TRIAL_FAILED: return "failed";
    case v1::TRIAL_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

absl::StatusOr<v1::TrialState> ParseTrialState(const std::string& name) {
  for (v1::TrialState s : {v1::TRIAL_QUEUED, v1::TRIAL_RUNNING, v1::TRIAL_SUCCEEDED,
                           v1::TRIAL_FAILED, v1::TRIAL_CANCELLED}) {
    if (TrialStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--state ", name, ": expected queued, running, succeeded, failed or cancelled"));
}

bool IsFinal(v1::SweepState s) {
  return s == v1::SWEEP_SUCCEEDED || s == v1::SWEEP_FAILED || s == v1::SWEEP_CANCELLED;
}

absl::Status RequireId(const char* flag, int64_t id) {
  if (id <= 0) return absl::InvalidArgumentError(absl::StrCat("--", flag, " ID is required"));
  return absl::OkStatus();
}

absl::Status CheckFormatFlag() {
  const std::string f = absl::GetFlag(FLAGS_format);
  if (f != "table" && f != "csv" && f != "json") {
    return absl::InvalidArgumentError(absl::StrCat("--format ", f, ": expected table, csv or json"));
  }
  return absl::OkStatus();
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

std::string FormatObjective(v1::Objective o, double v) {
  switch (o) {
    case v1::OBJECTIVE_TOP1:
    case v1::OBJECTIVE_TOP5: return Percent(v);
    case v1::OBJECTIVE_SIZE: return Bits(static_cast<int64_t>(v));
    case v1::OBJECTIVE_ENERGY: return absl::StrFormat("%.1f nJ", v / 1000);
    default: return absl::StrFormat("%.4g", v);
  }
}

void PrintSweepLine(const v1::Sweep& s) {
  absl::PrintF("sweep %d  %-9s  %-11s  stage %-14s  %d/%d trials (%d cached, %d failed)", s.id(),
               StateName(s.state()), s.spec().strategy(), s.stage(),
               s.trials_succeeded() + s.trials_failed() + s.trials_cancelled(), s.trials_total(),
               s.trials_cached(), s.trials_failed());
  if (s.has_baseline_top1()) absl::PrintF("  fp32 %s", Percent(s.baseline_top1()));
  if (s.has_best_trial_id()) {
    absl::PrintF("  best: trial %d %s %s", s.best_trial_id(), Percent(s.best_top1()),
                 Bits(s.best_size_bits()));
  }
  absl::PrintF("\n");
}

// A simple scatter of the first two objectives with the frontier's staircase.
std::string FrontierSvg(const v1::Frontier& f) {
  const double w = 640, h = 420, left = 80, bottom = 50, top = 30, right = 30;
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const v1::FrontierPoint& p : f.points()) {
    xmin = std::min(xmin, p.values(1)), xmax = std::max(xmax, p.values(1));
    ymin = std::min(ymin, p.values(0)), ymax = std::max(ymax, p.values(0));
  }
  if (xmax <= xmin) xmax = xmin + 1, xmin -= 1;
  if (ymax <= ymin) ymax = ymin + 0.01, ymin -= 0.01;
  auto X = [&](double v) { return left + (v - xmin) / (xmax - xmin) * (w - left - right); };
  auto Y = [&](double v) { return h - bottom - (v - ymin) / (ymax - ymin) * (h - top - bottom); };
  const char* xname = server::ObjectiveName(f.objectives(1));
  const char* yname = server::ObjectiveName(f.objectives(0));
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
      "fill=\"white\"/>\n<text x=\"%g\" y=\"18\">sweep %d frontier: %s vs %s</text>\n"
      "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n"
      "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n"
      "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n"
      "<text x=\"15\" y=\"%g\" transform=\"rotate(-90 15 %g)\" text-anchor=\"middle\">%s</text>\n",
      w, h, left, f.sweep_id(), yname, xname, left, h - bottom, w - right, h - bottom, left, top,
      left, h - bottom, (left + w - right) / 2, h - 12, xname, (top + h - bottom) / 2,
      (top + h - bottom) / 2, yname);
  absl::StrAppend(&svg, absl::StrFormat(
      "<text x=\"%g\" y=\"%g\" text-anchor=\"start\">%s</text>\n<text x=\"%g\" y=\"%g\" "
      "text-anchor=\"end\">%s</text>\n<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%s</text>\n"
      "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%s</text>\n",
      left, h - bottom + 16, FormatObjective(f.objectives(1), xmin), w - right, h - bottom + 16,
      FormatObjective(f.objectives(1), xmax), left - 4, h - bottom,
      FormatObjective(f.objectives(0), ymin), left - 4, top + 4,
      FormatObjective(f.objectives(0), ymax)));
  std::vector<std::pair<double, double>> points;
  for (const v1::FrontierPoint& p : f.points()) points.emplace_back(p.values(1), p.values(0));
  std::sort(points.begin(), points.end());
  std::string path;
  for (const auto& [x, y] : points) {
    absl::StrAppend(&path, path.empty() ? "M" : " L", absl::StrFormat("%.1f %.1f", X(x), Y(y)));
  }
  absl::StrAppend(&svg, "<path d=\"", path, "\" fill=\"none\" stroke=\"#3366cc\"/>\n");
  for (const v1::FrontierPoint& p : f.points()) {
    absl::StrAppend(&svg, absl::StrFormat(
        "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>trial %d: %s</title>"
        "</circle>\n", X(p.values(1)), Y(p.values(0)), p.within_margin() ? "#2a9d2a" : "#cc3333",
        p.trial_id(), p.spec().label()));
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

}  // namespace

absl::StatusOr<v1::SweepSpec> SweepSpecFromFlags() {
  v1::SweepSpec spec;
  if (const std::string file = absl::GetFlag(FLAGS_sweep_file); !file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
    google::protobuf::util::JsonParseOptions options;
    const auto parsed = google::protobuf::util::JsonStringToMessage(text, &spec, options);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": not a SweepSpec: ", std::string(parsed.message())));
    }
  }
  // Flags override the file; a flag at its default leaves the file's value.
  if (!absl::GetFlag(FLAGS_name).empty()) spec.set_name(absl::GetFlag(FLAGS_name));
  if (spec.strategy().empty() || absl::GetFlag(FLAGS_strategy) != "ristretto") {
    spec.set_strategy(absl::GetFlag(FLAGS_strategy));
  }
  if (!spec.has_error_margin() || absl::GetFlag(FLAGS_error_margin) != 1.0) {
    spec.set_error_margin(absl::GetFlag(FLAGS_error_margin));
  }
  if (!spec.settings().dataset().eval().empty() && !DatasetFlagsGiven()) {
    // The file names the data.
  } else {
    // The workers resolve the references: idx:DIR means DIR/train and DIR/t10k.
    ASSIGN_OR_RETURN(DatasetFlags data, DatasetFlagsFromCommandLine(DatasetUse::kEvaluation,
                                                                    /*data_is_local=*/false));
    *spec.mutable_settings()->mutable_dataset() = data.ref;
  }
  if (absl::GetFlag(FLAGS_batch) != 256 || spec.settings().batch() == 0) {
    spec.mutable_settings()->set_batch(absl::GetFlag(FLAGS_batch));
  }
  if (const std::string profile = absl::GetFlag(FLAGS_hardware_profile); !profile.empty()) {
    ASSIGN_OR_RETURN(std::string json, ReadFileToString(profile));
    spec.mutable_settings()->set_hardware_profile_json(json);
  }
  for (const std::string& f : SplitList(absl::GetFlag(FLAGS_weight_formats))) {
    spec.mutable_space()->add_weight_formats(f);
  }
  for (const std::string& f : SplitList(absl::GetFlag(FLAGS_activation_formats))) {
    spec.mutable_space()->add_activation_formats(f);
  }
  if (const std::string grid = absl::GetFlag(FLAGS_grid); !grid.empty()) {
    ASSIGN_OR_RETURN(std::vector<v1::GridAxis> axes, GridFromFlag(grid));
    spec.mutable_space()->clear_axes();
    for (v1::GridAxis& a : axes) *spec.mutable_space()->add_axes() = std::move(a);
  }
  ASSIGN_OR_RETURN(std::vector<v1::Objective> objectives, ObjectivesFromFlag());
  if (!objectives.empty()) *spec.mutable_objectives() = {objectives.begin(), objectives.end()};
  if (const int64_t steps = absl::GetFlag(FLAGS_finetune_steps); steps != 0) {
    if (steps < 0) return absl::InvalidArgumentError("--finetune_steps must be >= 0");
    spec.mutable_finetune()->set_steps(steps);
    if (absl::GetFlag(FLAGS_lr) > 0) spec.mutable_finetune()->set_learning_rate(absl::GetFlag(FLAGS_lr));
  }
  if (absl::GetFlag(FLAGS_budget) != 0) spec.set_budget(absl::GetFlag(FLAGS_budget));
  if (absl::GetFlag(FLAGS_population) != 0) spec.set_population(absl::GetFlag(FLAGS_population));
  if (absl::GetFlag(FLAGS_max_attempts) != 0) spec.set_max_attempts(absl::GetFlag(FLAGS_max_attempts));
  if (spec.seed() == 0) spec.set_seed(absl::GetFlag(FLAGS_seed));
  return spec;
}

absl::StatusOr<v1::Sweep> FollowSweep(ExplorerClient& client, int64_t sweep_id, bool progress) {
  const absl::Time start = absl::Now();
  v1::Sweep last;
  v1::WatchSweepRequest request;
  request.set_sweep_id(sweep_id);
  // A terminal gets one redrawn progress line; a log gets a line per stage and the last one.
  const bool terminal = isatty(fileno(stderr));
  std::string last_stage;
  RETURN_IF_ERROR(client.Watch(request, [&](const v1::SweepEvent& e) {
    last = e.sweep();
    if (!progress) return true;
    const bool stage_changed = last.stage() != last_stage;
    last_stage = last.stage();
    if (!terminal && !stage_changed && !IsFinal(last.state())) return true;
    const int64_t done = last.trials_succeeded() + last.trials_failed() + last.trials_cancelled();
    const int64_t total = std::max<int64_t>(last.trials_total(), 1);
    const int width = 24;
    const int filled = static_cast<int>(width * done / total);
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    std::string eta = "--:--";
    if (done > 0 && done < total) eta = Duration(elapsed / done * (total - done));
    std::string best;
    if (last.has_best_trial_id()) {
      best = absl::StrCat("  best ", Percent(last.best_top1()), " @ ", Bits(last.best_size_bits()));
    }
    std::fprintf(stderr, "%s[%s%s] %lld/%lld  %-14s  %s  ETA %s%s   %s", terminal ? "\r" : "",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<long long>(done), static_cast<long long>(last.trials_total()),
                 last.stage().c_str(), Duration(elapsed).c_str(), eta.c_str(), best.c_str(),
                 terminal ? "" : "\n");
    if (terminal && IsFinal(last.state())) std::fprintf(stderr, "\n");
    return true;
  }));
  if (last.id() == 0) return client.GetSweep(sweep_id);
  return last;
}

absl::Status PrintFrontier(const v1::Frontier& f) {
  RETURN_IF_ERROR(CheckFormatFlag());
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "json") {
    absl::PrintF("%s\n", ToJson(f));
    return absl::OkStatus();
  }
  std::vector<std::string> header = {"trial"};
  for (int o : f.objectives()) header.push_back(server::ObjectiveName(static_cast<v1::Objective>(o)));
  for (const char* h : {"within_margin", "stage", "label"}) header.push_back(h);
  if (format == "csv") {
    absl::PrintF("%s\n", absl::StrJoin(header, ","));
    for (const v1::FrontierPoint& p : f.points()) {
      absl::PrintF("%d,%s,%d,%s,\"%s\"\n", p.trial_id(), absl::StrJoin(p.values(), ","),
                   p.within_margin() ? 1 : 0, p.spec().stage(), p.spec().label());
    }
    return absl::OkStatus();
  }
  absl::PrintF("frontier of sweep %d (%d points", f.sweep_id(), f.points_size());
  if (f.has_baseline_top1()) {
    absl::PrintF("; fp32 top1 %s, margin %.2f pp", Percent(f.baseline_top1()), f.error_margin());
  }
  if (f.has_hypervolume()) absl::PrintF("; hypervolume %.4f", f.hypervolume());
  absl::PrintF(")\n%-6s", "trial");
  for (size_t i = 1; i < header.size() - 3; ++i) absl::PrintF(" %12s", header[i]);
  absl::PrintF("  %-6s %s\n", "margin", "label");
  for (const v1::FrontierPoint& p : f.points()) {
    absl::PrintF("%-6d", p.trial_id());
    for (int i = 0; i < p.values_size(); ++i) {
      absl::PrintF(" %12s", FormatObjective(static_cast<v1::Objective>(f.objectives(i)), p.values(i)));
    }
    absl::PrintF("  %-6s %s\n", p.within_margin() ? "yes" : "no", p.spec().label());
  }
  return absl::OkStatus();
}

absl::Status SubmitCommand() {
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(v1::SweepSpec spec, SweepSpecFromFlags());
  if (const std::string model = absl::GetFlag(FLAGS_model); !model.empty()) {
    ASSIGN_OR_RETURN(std::string hash, client->UploadModelFile(model));
    spec.set_model_hash(hash);
  } else if (!absl::GetFlag(FLAGS_model_hash).empty()) {
    spec.set_model_hash(absl::GetFlag(FLAGS_model_hash));
  } else if (spec.model_hash().empty()) {
    return absl::InvalidArgumentError("--model M.onnx (or --model_hash H) is required");
  }
  ASSIGN_OR_RETURN(v1::Sweep sweep, client->Submit(spec));
  absl::PrintF("submitted sweep %d (%s, model %s)\n", sweep.id(), spec.strategy(),
               spec.model_hash().substr(0, 12));
  if (!absl::GetFlag(FLAGS_wait)) return absl::OkStatus();
  ASSIGN_OR_RETURN(sweep, FollowSweep(*client, sweep.id(), /*progress=*/true));
  PrintSweepLine(sweep);
  if (sweep.state() == v1::SWEEP_FAILED) {
    return absl::AbortedError(absl::StrCat("sweep ", sweep.id(), " failed: ", sweep.error()));
  }
  v1::GetFrontierRequest request;
  request.set_sweep_id(sweep.id());
  ASSIGN_OR_RETURN(v1::Frontier frontier, client->GetFrontier(request));
  return PrintFrontier(frontier);
}

absl::Status WatchCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(v1::Sweep sweep, FollowSweep(*client, id, /*progress=*/true));
  PrintSweepLine(sweep);
  if (!sweep.error().empty()) absl::PrintF("error: %s\n", sweep.error());
  return absl::OkStatus();
}

absl::Status FrontierCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  RETURN_IF_ERROR(CheckFormatFlag());
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  v1::GetFrontierRequest request;
  request.set_sweep_id(id);
  request.set_within_margin_only(absl::GetFlag(FLAGS_within_margin_only));
  ASSIGN_OR_RETURN(std::vector<v1::Objective> objectives, ObjectivesFromFlag());
  *request.mutable_objectives() = {objectives.begin(), objectives.end()};
  ASSIGN_OR_RETURN(v1::Frontier frontier, client->GetFrontier(request));
  RETURN_IF_ERROR(PrintFrontier(frontier));
  if (const std::string plot = absl::GetFlag(FLAGS_plot); !plot.empty()) {
    std::ofstream out(plot);
    out << FrontierSvg(frontier);
    if (!out) return absl::UnavailableError(absl::StrCat(plot, ": cannot write"));
    std::fprintf(stderr, "wrote %s\n", plot.c_str());
  }
  return absl::OkStatus();
}

absl::Status TrialsCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  RETURN_IF_ERROR(CheckFormatFlag());
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  v1::ListTrialsRequest request;
  request.set_sweep_id(id);
  if (const std::string state = absl::GetFlag(FLAGS_state); !state.empty()) {
    ASSIGN_OR_RETURN(v1::TrialState s, ParseTrialState(state));
    request.set_state(s);
  }
  request.set_stage(absl::GetFlag(FLAGS_stage));
  request.set_within_margin_only(absl::GetFlag(FLAGS_within_margin_only));
  request.set_page_size(1000);
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "csv") {
    absl::PrintF("trial,stage,state,cached,top1,top5,size_bits,energy_pj,bops,within_margin,label\n");
  } else if (format == "table") {
    absl::PrintF("%-6s %-14s %-9s %8s %12s %12s %-6s %s\n", "trial", "stage", "state", "top1",
                 "size", "energy", "margin", "label");
  }
  do {
    ASSIGN_OR_RETURN(v1::ListTrialsResponse page, client->ListTrials(request));
    for (const v1::Trial& t : page.trials()) {
      const v1::TrialResult& r = t.result();
      const bool has = t.state() == v1::TRIAL_SUCCEEDED;
      if (format == "json") {
        absl::PrintF("%s\n", ToJson(t));
      } else if (format == "csv") {
        absl::PrintF("%d,%s,%s,%d,%s,%s,%s,%s,%s,%d,\"%s\"\n", t.id(), t.spec().stage(),
                     TrialStateName(t.state()), t.cached() ? 1 : 0,
                     has ? absl::StrCat(r.top1()) : "", has ? absl::StrCat(r.top5()) : "",
                     has ? absl::StrCat(r.size_bits()) : "", has ? absl::StrCat(r.energy_pj()) : "",
                     has ? absl::StrCat(r.bops()) : "", t.within_margin() ? 1 : 0, t.spec().label());
      } else {
        absl::PrintF("%-6d %-14s %-9s %8s %12s %12s %-6s %s%s\n", t.id(), t.spec().stage(),
                     TrialStateName(t.state()), has ? Percent(r.top1()) : "-",
                     has ? Bits(r.size_bits()) : "-",
                     has ? absl::StrFormat("%.1f nJ", r.energy_pj() / 1000) : "-",
                     has ? (t.within_margin() ? "yes" : "no") : "-", t.spec().label(),
                     t.cached() ? " (cached)" : t.error().empty() ? "" : "  error: " + t.error());
      }
    }
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  return absl::OkStatus();
}

absl::Status ExportCommand() {
  const int64_t id = absl::GetFlag(FLAGS_trial);
  RETURN_IF_ERROR(RequireId("trial", id));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  v1::ExportConfigRequest request;
  request.set_trial_id(id);
  const std::string qdq = absl::GetFlag(FLAGS_qdq);
  request.set_qdq_onnx(!qdq.empty());
  ASSIGN_OR_RETURN(v1::ExportConfigResponse response, client->Export(request));
  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) {
    std::ofstream file(out);
    file << response.manifest_json() << "\n";
    if (!file) return absl::UnavailableError(absl::StrCat(out, ": cannot write"));
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  } else {
    absl::PrintF("%s\n", response.manifest_json());
  }
  if (!qdq.empty()) {
    std::ofstream file(qdq, std::ios::binary);
    file << response.qdq_onnx();
    if (!file) return absl::UnavailableError(absl::StrCat(qdq, ": cannot write"));
    std::fprintf(stderr, "wrote %s\n", qdq.c_str());
  }
  return absl::OkStatus();
}

absl::Status CancelCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(v1::Sweep sweep, client->Cancel(id));
  PrintSweepLine(sweep);
  return absl::OkStatus();
}

absl::Status SweepsCommand() {
  RETURN_IF_ERROR(CheckFormatFlag());
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  v1::ListSweepsRequest request;
  do {
    ASSIGN_OR_RETURN(v1::ListSweepsResponse page, client->ListSweeps(request));
    for (const v1::Sweep& s : page.sweeps()) {
      if (absl::GetFlag(FLAGS_format) == "json") {
        absl::PrintF("%s\n", ToJson(s));
      } else {
        PrintSweepLine(s);
      }
    }
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  return absl::OkStatus();
}

}  // namespace bitsweep::cli
