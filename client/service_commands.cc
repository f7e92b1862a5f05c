#include "client/service_commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sys/ioctl.h>
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
#include "client/command_line.h"
#include "client/dataset_flags.h"
#include "client/flag_values.h"
#include "client/listing.h"
#include "client/plot.h"
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
ABSL_DECLARE_FLAG(std::string, format);  // listing.cc

ABSL_FLAG(std::string, server, "", "coordinator address host:port (submit, watch, ...)");
ABSL_FLAG(std::string, token, "", "bearer token for the coordinator, when it requires one");
ABSL_FLAG(std::string, token_file, "",
          "read the bearer token from this file's first line (keeps it out of ps)");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificates: connect with TLS");
ABSL_FLAG(int32_t, reconnect_seconds, 300,
          "watch, submit --wait: keep reconnecting this long to a coordinator that went away "
          "(restarting), with backoff; 0: give up at once");
ABSL_FLAG(std::string, model_hash, "", "an uploaded model's hash (instead of --model)");
ABSL_FLAG(std::string, strategy, "ristretto",
          "grid | ristretto | sensitivity | hawq | hawq-table | random | evolutionary");
ABSL_FLAG(double, error_margin, 1.0, "allowed top-1 drop against fp32, percentage points");
ABSL_FLAG(std::string, weight_formats, "",
          "candidate weight formats, comma-separated (default fixed:16 and fixed:8 down to fixed:2; "
          "hawq: fixed:16 and int:8:asym:channel down to int:2:asym:channel)");
ABSL_FLAG(std::string, activation_formats, "",
          "candidate activation formats (default fixed:16 and fixed:8 down to fixed:4)");
ABSL_FLAG(std::string, grid, "",
          "grid axes 'SELECTOR.ROLE=F1,F2;...' with SELECTOR default|conv|fc|layers.NAME and "
          "ROLE weights|inputs|outputs|activations");
ABSL_FLAG(std::string, objectives, "", "frontier objectives, e.g. top1,size (top1 top5 size "
          "energy bops); the first cost is also hawq's budget (default energy; hawq-table: size)");
ABSL_FLAG(std::optional<int64_t>, finetune_steps, std::nullopt,
          "fine-tuning steps for the stages that fine-tune (default: the strategy's, 1000 for "
          "hawq and none for the others; 0 turns fine-tuning off)");
ABSL_FLAG(int64_t, budget, 0,
          "random, evolutionary: configs to evaluate (default 32 for random, 64 for evolutionary); "
          "hawq: configs taken from its predicted frontier (default 11; hawq-table: 24)");
ABSL_FLAG(int32_t, population, 0, "evolutionary: configs per generation (default 16)");
ABSL_FLAG(int32_t, max_attempts, 0, "attempts per trial before it fails (default 3)");
ABSL_FLAG(std::string, name, "", "a name for the sweep");
ABSL_FLAG(std::string, sweep_file, "",
          "sweep spec as JSON (protobuf JSON of bitsweep.v1.SweepSpec); flags given override");
ABSL_FLAG(bool, no_cache, false,
          "evaluate every trial of the sweep even when an identical one was evaluated before");
ABSL_FLAG(bool, wait, false, "submit: follow the sweep until it ends, then print its frontier");
ABSL_FLAG(int64_t, sweep, 0, "sweep id");
ABSL_FLAG(int64_t, trial, 0, "trial id");
ABSL_FLAG(std::string, plot, "",
          "frontier: also draw it over every evaluated trial, as SVG (or PNG for a .png name, "
          "through rsvg-convert); needs an accuracy first: --objectives top1,size|energy|bops");
ABSL_FLAG(bool, log_scale, false, "figures: a logarithmic cost axis (size, energy, BOPs)");
ABSL_FLAG(bool, within_margin_only, false, "only trials within the error margin");
ABSL_FLAG(std::string, state, "", "trials: queued | running | succeeded | failed | cancelled");
ABSL_FLAG(std::string, stage, "", "trials: only this planner stage");
ABSL_FLAG(std::string, qdq, "", "export: also write a QDQ ONNX model here (integer formats)");

namespace bitsweep::cli {

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

absl::StatusOr<std::unique_ptr<ExplorerClient>> ConnectFromFlags() {
  ConnectOptions options;
  ASSIGN_OR_RETURN(options.token,
                   ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file),
                                "BITSWEEP_TOKEN"));
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  return ExplorerClient::Connect(absl::GetFlag(FLAGS_server), options);
}

namespace {

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
      return UsageError(absl::StrCat(
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
  if (id <= 0) return UsageError(absl::StrCat("--", flag, " ID is required"));
  return absl::OkStatus();
}

std::string FormatObjective(v1::Objective o, double v) {
  if (o == v1::OBJECTIVE_SIZE) return Bits(static_cast<int64_t>(v));
  return FormatValue(o, v);  // %, nJ / µJ, MBOPs / GBOPs
}

// Trials that ran to an end (a cancelled one did not: a cancelled sweep is not "201/201").
int64_t TrialsEvaluated(const v1::Sweep& s) { return s.trials_succeeded() + s.trials_failed(); }

// "sweep 3  running  ristretto  stage conv_weights  12/40 trials evaluated (2 cached, 1 failed,
// 0 cancelled)  fp32 91.20%  best: trial 9 90.80% 12.3 KiB"
std::string SweepLine(const v1::Sweep& s) {
  std::string line = absl::StrFormat(
      "sweep %d  %s  %s  stage %s  %d/%d trials evaluated (%d cached, %d failed, %d cancelled)",
      s.id(), StateName(s.state()), s.spec().strategy(), s.stage().empty() ? "-" : s.stage(),
      TrialsEvaluated(s), s.trials_total(), s.trials_cached(), s.trials_failed(), s.trials_cancelled());
  if (s.has_baseline_top1()) absl::StrAppend(&line, "  fp32 ", Percent(s.baseline_top1()));
  if (s.has_best_trial_id()) {
    absl::StrAppend(&line, "  best: trial ", s.best_trial_id(), " ", Percent(s.best_top1()), " ",
                    Bits(s.best_size_bits()));
  }
  return line;
}

void PrintSweepLine(const v1::Sweep& s) { absl::PrintF("%s\n", SweepLine(s)); }

nlohmann::json OptionalNumber(bool has, double v) { return has ? nlohmann::json(v) : nlohmann::json(); }

// The config JSON as a JSON value (a string when it does not parse).
nlohmann::json ConfigJson(const std::string& text) {
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? nlohmann::json(text) : parsed;
}

std::string OutputFormatFlag() { return absl::GetFlag(FLAGS_format); }

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
  if (const std::optional<int64_t> steps = absl::GetFlag(FLAGS_finetune_steps); steps) {
    if (*steps < 0) return UsageError(absl::StrCat("--finetune_steps must be >= 0, got ", *steps));
    spec.mutable_finetune()->set_steps(*steps);
  }
  if (absl::GetFlag(FLAGS_lr) > 0) spec.mutable_finetune()->set_learning_rate(absl::GetFlag(FLAGS_lr));
  if (absl::GetFlag(FLAGS_budget) != 0) spec.set_budget(absl::GetFlag(FLAGS_budget));
  if (absl::GetFlag(FLAGS_population) != 0) spec.set_population(absl::GetFlag(FLAGS_population));
  if (absl::GetFlag(FLAGS_max_attempts) != 0) spec.set_max_attempts(absl::GetFlag(FLAGS_max_attempts));
  if (absl::GetFlag(FLAGS_no_cache)) spec.set_no_cache(true);
  if (spec.seed() == 0) spec.set_seed(absl::GetFlag(FLAGS_seed));
  return spec;
}

namespace {

// The width of the terminal `out` writes to: its window, else $COLUMNS, else 80.
int TerminalWidth(FILE* out) {
  winsize ws{};
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  int columns = 0;
  if (const char* env = std::getenv("COLUMNS"); env != nullptr && absl::SimpleAtoi(env, &columns) &&
                                                columns > 0) {
    return columns;
  }
  return 80;
}

// One progress line: a bar of evaluated trials ('#' succeeded, '!' failed, 'x' cancelled, '.'
// still to run), counts, stage, elapsed time, ETA and the best point so far.
std::string ProgressLine(const v1::Sweep& s, double elapsed, bool bar) {
  const int64_t total = std::max<int64_t>(s.trials_total(), 1);
  std::string line;
  if (bar) {
    const int width = 20;
    auto cells = [&](int64_t n) { return static_cast<int>(width * n / total); };
    const int ok = cells(s.trials_succeeded());
    const int failed = std::min(width - ok, cells(s.trials_failed()));
    const int cancelled = std::min(width - ok - failed, cells(s.trials_cancelled()));
    line = absl::StrCat("[", std::string(ok, '#'), std::string(failed, '!'),
                        std::string(cancelled, 'x'), std::string(width - ok - failed - cancelled, '.'),
                        "] ");
  } else {
    line = absl::StrCat("sweep ", s.id(), " ");
  }
  const int64_t done = TrialsEvaluated(s);
  absl::StrAppend(&line, StateName(s.state()), " ", done, "/", s.trials_total());
  absl::StrAppend(&line, " (", s.trials_cached(), " cached, ", s.trials_failed(), " failed, ",
                  s.trials_cancelled(), " cancelled)");
  absl::StrAppend(&line, "  stage ", s.stage().empty() ? "-" : s.stage(), "  ", Duration(elapsed));
  if (!IsFinal(s.state())) {
    std::string eta = "--:--";
    if (done > 0 && done < s.trials_total()) eta = Duration(elapsed / done * (s.trials_total() - done));
    absl::StrAppend(&line, " ETA ", eta);
  }
  if (s.has_best_trial_id()) {
    absl::StrAppend(&line, "  best ", Percent(s.best_top1()), " @ ", Bits(s.best_size_bits()));
  }
  return line;
}

}  // namespace

absl::StatusOr<v1::Sweep> FollowSweepOn(ExplorerClient& client, int64_t sweep_id, FILE* out) {
  const absl::Time start = absl::Now();
  v1::Sweep last;
  v1::WatchSweepRequest request;
  request.set_sweep_id(sweep_id);
  // A terminal gets one progress line redrawn in place, cut to the window's width (a wrapped
  // line would scroll on every redraw); a pipe or a log gets one plain line per change.
  const bool terminal = out != nullptr && isatty(fileno(out));
  std::string printed;
  // A coordinator that restarts ends the stream (UNAVAILABLE, or OK before the sweep ended): the
  // watch reconnects with backoff for up to --reconnect-seconds of outage, then gives up.
  const absl::Duration reconnect_for = absl::Seconds(absl::GetFlag(FLAGS_reconnect_seconds));
  std::optional<absl::Time> lost_since;
  absl::Duration backoff;
  auto on_event = [&](const v1::SweepEvent& e) {
    if (lost_since.has_value()) {
      std::fprintf(stderr, "bitsweep: reconnected to the coordinator after %.1f s\n",
                   absl::ToDoubleSeconds(absl::Now() - *lost_since));
      lost_since.reset();
    }
    last = e.sweep();
    if (out == nullptr) return true;
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    if (terminal) {
      std::string line = ProgressLine(last, elapsed, /*bar=*/true);
      const size_t width = static_cast<size_t>(std::max(TerminalWidth(out) - 1, 10));
      if (line.size() > width) line = line.substr(0, width);
      std::fprintf(out, "\r%s\x1b[K%s", line.c_str(), IsFinal(last.state()) ? "\n" : "");
    } else {
      // Without the clock, so that a line is printed only when the sweep changed.
      const std::string line = ProgressLine(last, elapsed, /*bar=*/false);
      const std::string key = line.substr(0, line.find("  stage ")) + last.stage();
      if (key == printed) return true;
      printed = key;
      std::fprintf(out, "%s\n", line.c_str());
    }
    std::fflush(out);
    return true;
  };
  for (;;) {
    const absl::Status watched = client.Watch(request, on_event);
    if (last.id() != 0 && IsFinal(last.state())) return last;
    if (!watched.ok() && !absl::IsUnavailable(watched)) return watched;  // e.g. NOT_FOUND
    const absl::Time now = absl::Now();
    if (!lost_since.has_value()) {
      lost_since = now;
      backoff = absl::Milliseconds(250);
      if (reconnect_for > absl::ZeroDuration()) {
        std::fprintf(stderr, "%sbitsweep: lost the coordinator (%s); reconnecting for up to %s\n",
                     terminal ? "\n" : "",
                     watched.ok() ? "stream ended" : std::string(watched.message()).c_str(),
                     absl::FormatDuration(reconnect_for).c_str());
      }
    }
    if (now - *lost_since >= reconnect_for) {
      return absl::UnavailableError(absl::StrCat(
          "lost the coordinator while following sweep ", sweep_id, " and could not reconnect in ",
          absl::FormatDuration(reconnect_for), watched.ok() ? "" : ": ", watched.message()));
    }
    absl::SleepFor(std::min(backoff, *lost_since + reconnect_for - now));
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

absl::StatusOr<v1::Sweep> FollowSweep(ExplorerClient& client, int64_t sweep_id, bool progress) {
  return FollowSweepOn(client, sweep_id, progress ? stderr : nullptr);
}

absl::Status SweepOutcome(const v1::Sweep& sweep) {
  if (sweep.state() == v1::SWEEP_FAILED) {
    return absl::AbortedError(absl::StrCat("sweep ", sweep.id(), " failed: ", sweep.error()));
  }
  if (sweep.state() == v1::SWEEP_CANCELLED) {
    return absl::CancelledError(absl::StrCat("sweep ", sweep.id(), " was cancelled"));
  }
  return absl::OkStatus();
}

namespace {

// The result columns of a frontier point or a trial, by objective.
const char* ObjectiveColumn(v1::Objective o) {
  switch (o) {
    case v1::OBJECTIVE_TOP1: return "top1";
    case v1::OBJECTIVE_TOP5: return "top5";
    case v1::OBJECTIVE_SIZE: return "size_bits";
    case v1::OBJECTIVE_ENERGY: return "energy_pj";
    case v1::OBJECTIVE_BOPS: return "bops";
    default: return "";
  }
}

std::vector<Cell> ResultCells(const v1::TrialResult& r, bool has) {
  if (!has) return {Cell(), Cell(), Cell(), Cell(), Cell()};
  return {Cell(r.top1(), Percent(r.top1())), Cell(r.top5(), Percent(r.top5())),
          Cell(r.size_bits(), Bits(r.size_bits())),
          Cell(r.energy_pj(), FormatObjective(v1::OBJECTIVE_ENERGY, r.energy_pj())),
          Cell(r.bops(), FormatObjective(v1::OBJECTIVE_BOPS, r.bops()))};
}

}  // namespace

absl::Status PrintFrontier(const v1::Frontier& f) {
  const std::string format = OutputFormatFlag();
  std::vector<bool> shown(5, false);
  nlohmann::json objectives = nlohmann::json::array();
  for (int o : f.objectives()) {
    const auto objective = static_cast<v1::Objective>(o);
    objectives.push_back(server::ObjectiveName(objective));
    if (o >= v1::OBJECTIVE_TOP1 && o <= v1::OBJECTIVE_BOPS) shown[o - v1::OBJECTIVE_TOP1] = true;
  }
  std::vector<Column> columns = {{"trial"}};
  for (v1::Objective o : {v1::OBJECTIVE_TOP1, v1::OBJECTIVE_TOP5, v1::OBJECTIVE_SIZE,
                          v1::OBJECTIVE_ENERGY, v1::OBJECTIVE_BOPS}) {
    columns.push_back({ObjectiveColumn(o), shown[o - v1::OBJECTIVE_TOP1], false,
                       server::ObjectiveName(o)});
  }
  columns.push_back({"within_margin", true, true, "margin"});
  columns.push_back({"stage", true, true});
  columns.push_back({"label", true, true});
  columns.push_back({"config", false});
  Listing listing(columns);
  for (const v1::FrontierPoint& p : f.points()) {
    std::vector<Cell> row = {Cell(p.trial_id())};
    for (Cell& c : ResultCells(p.result(), true)) row.push_back(std::move(c));
    row.push_back(Cell(p.within_margin()));
    row.push_back(Cell(p.spec().stage()));
    row.push_back(Cell(p.spec().label()));
    row.push_back(Cell(ConfigJson(p.spec().config_json())));
    listing.AddRow(std::move(row));
  }
  nlohmann::json meta = {{"sweep_id", f.sweep_id()},
                         {"objectives", objectives},
                         {"baseline_top1", OptionalNumber(f.has_baseline_top1(), f.baseline_top1())},
                         {"error_margin", f.error_margin()},
                         {"hypervolume", OptionalNumber(f.has_hypervolume(), f.hypervolume())}};
  if (format == "table") {
    absl::PrintF("frontier of sweep %d (%d points", f.sweep_id(), f.points_size());
    if (f.has_baseline_top1()) {
      absl::PrintF("; fp32 top1 %s, margin %.2f pp", Percent(f.baseline_top1()), f.error_margin());
    }
    if (f.has_hypervolume()) absl::PrintF("; hypervolume %.4f", f.hypervolume());
    absl::PrintF(")\n");
  }
  listing.Print(format, stdout, meta, "points");
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
    return UsageError("--model M.onnx (or --model-hash H) is required");
  }
  ASSIGN_OR_RETURN(v1::Sweep sweep, client->Submit(spec));
  const bool machine = absl::GetFlag(FLAGS_wait) && OutputFormatFlag() != "table";
  std::fprintf(machine ? stderr : stdout, "submitted sweep %lld (%s, model %s)\n",
               static_cast<long long>(sweep.id()), spec.strategy().c_str(),
               spec.model_hash().substr(0, 12).c_str());
  std::fflush(stdout);
  if (!absl::GetFlag(FLAGS_wait)) return absl::OkStatus();
  ASSIGN_OR_RETURN(sweep, FollowSweep(*client, sweep.id(), /*progress=*/true));
  // Only the frontier goes to stdout when it is printed for a machine (csv, json).
  if (OutputFormatFlag() == "table") {
    PrintSweepLine(sweep);
  } else {
    std::fprintf(stderr, "%s\n", SweepLine(sweep).c_str());
  }
  RETURN_IF_ERROR(SweepOutcome(sweep));
  v1::GetFrontierRequest request;
  request.set_sweep_id(sweep.id());
  ASSIGN_OR_RETURN(v1::Frontier frontier, client->GetFrontier(request));
  return PrintFrontier(frontier);
}

absl::Status WatchCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(v1::Sweep sweep, FollowSweepOn(*client, id, stdout));
  PrintSweepLine(sweep);
  return SweepOutcome(sweep);
}

absl::Status FrontierCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  v1::GetFrontierRequest request;
  request.set_sweep_id(id);
  request.set_within_margin_only(absl::GetFlag(FLAGS_within_margin_only));
  ASSIGN_OR_RETURN(std::vector<v1::Objective> objectives, ObjectivesFromFlag());
  *request.mutable_objectives() = {objectives.begin(), objectives.end()};
  ASSIGN_OR_RETURN(v1::Frontier frontier, client->GetFrontier(request));
  const std::string plot = absl::GetFlag(FLAGS_plot);
  const auto y = frontier.objectives_size() == 2 ? frontier.objectives(0) : 0;
  const auto x = frontier.objectives_size() == 2 ? frontier.objectives(1) : 0;
  if (!plot.empty() && !(server::IsMaximized(static_cast<v1::Objective>(y)) &&
                         !server::IsMaximized(static_cast<v1::Objective>(x)))) {
    return UsageError("--plot draws an accuracy against a cost: --objectives top1,size (or "
                      "top1,energy, top1,bops, top5,...)");
  }
  RETURN_IF_ERROR(PrintFrontier(frontier));
  if (!plot.empty()) {
    ASSIGN_OR_RETURN(v1::Sweep sweep, client->GetSweep(id));
    v1::ListTrialsRequest trials_request;
    trials_request.set_sweep_id(id);
    ASSIGN_OR_RETURN(std::vector<v1::Trial> trials, ListAllTrials(*client, trials_request));
    PlotOptions options;
    options.log_cost = absl::GetFlag(FLAGS_log_scale);
    RETURN_IF_ERROR(WriteFigure(plot, AccuracyCostFigure(sweep, trials, static_cast<v1::Objective>(y),
                                                         static_cast<v1::Objective>(x), options)));
    std::fprintf(stderr, "wrote %s\n", plot.c_str());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Trial>> ListAllTrials(ExplorerClient& client,
                                                     v1::ListTrialsRequest request) {
  std::vector<v1::Trial> trials;
  request.set_page_size(1000);
  do {
    ASSIGN_OR_RETURN(v1::ListTrialsResponse page, client.ListTrials(request));
    for (v1::Trial& t : *page.mutable_trials()) trials.push_back(std::move(t));
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  return trials;
}

absl::Status TrialsCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  v1::ListTrialsRequest request;
  request.set_sweep_id(id);
  if (const std::string state = absl::GetFlag(FLAGS_state); !state.empty()) {
    absl::StatusOr<v1::TrialState> s = ParseTrialState(state);
    if (!s.ok()) return UsageError(s.status().message());
    request.set_state(*s);
  }
  request.set_stage(absl::GetFlag(FLAGS_stage));
  request.set_within_margin_only(absl::GetFlag(FLAGS_within_margin_only));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(std::vector<v1::Trial> trials, ListAllTrials(*client, request));
  Listing listing({{"trial"}, {"stage", true, true}, {"state", true, true}, {"cached"},
                   {"top1"}, {"top5", false}, {"size_bits", true, false, "size"},
                   {"energy_pj", true, false, "energy"}, {"bops"},
                   {"within_margin", true, true, "margin"}, {"label", true, true},
                   {"sweep_id", false}, {"cached_from", false}, {"attempts", false},
                   {"loss", false}, {"peak_activation_bits", false}, {"macs", false},
                   {"samples", false}, {"wall_seconds", false}, {"worker_id", false},
                   {"error", false}, {"config", false}});
  for (const v1::Trial& t : trials) {
    const v1::TrialResult& r = t.result();
    const bool has = t.state() == v1::TRIAL_SUCCEEDED;
    std::vector<Cell> results = ResultCells(r, has);
    std::string label = t.spec().label();
    if (!t.error().empty()) absl::StrAppend(&label, "  error: ", t.error());
    listing.AddRow({Cell(t.id()), Cell(t.spec().stage()), Cell(TrialStateName(t.state())),
                    Cell(t.cached()), results[0], results[1], results[2], results[3], results[4],
                    has ? Cell(t.within_margin()) : Cell(), Cell(t.spec().label(), label),
                    Cell(t.sweep_id()), t.cached() ? Cell(t.cached_from()) : Cell(),
                    Cell(t.attempts()), has ? Cell(r.loss()) : Cell(),
                    has ? Cell(r.peak_activation_bits()) : Cell(), has ? Cell(r.macs()) : Cell(),
                    has ? Cell(r.samples()) : Cell(), has ? Cell(r.wall_seconds()) : Cell(),
                    r.worker_id().empty() ? Cell() : Cell(r.worker_id()),
                    t.error().empty() ? Cell() : Cell(t.error()),
                    Cell(ConfigJson(t.spec().config_json()))});
  }
  listing.Print(OutputFormatFlag(), stdout, {{"sweep_id", id}}, "trials");
  return absl::OkStatus();
}

absl::Status TrialsInvalidateCommand() {
  const int64_t id = absl::GetFlag(FLAGS_trial);
  RETURN_IF_ERROR(RequireId("trial", id));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(v1::InvalidateTrialResponse response, client->InvalidateTrial(id));
  std::printf("trial %lld: result of trial %lld %s\n", static_cast<long long>(id),
              static_cast<long long>(response.evaluated_trial_id()),
              response.invalidated() ? "invalidated" : "was already invalidated");
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

absl::Status ResumeCommand() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  RETURN_IF_ERROR(RequireId("sweep", id));
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(v1::Sweep sweep, client->Resume(id));
  PrintSweepLine(sweep);
  if (!absl::GetFlag(FLAGS_wait)) return absl::OkStatus();
  ASSIGN_OR_RETURN(sweep, FollowSweep(*client, id, /*progress=*/true));
  PrintSweepLine(sweep);
  return SweepOutcome(sweep);
}

absl::Status SweepsCommand() {
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  Listing listing({{"sweep"}, {"name", true, true}, {"state", true, true},
                   {"strategy", true, true}, {"stage", true, true}, {"evaluated"}, {"total"},
                   {"cached"}, {"failed"}, {"cancelled"}, {"baseline_top1", true, false, "fp32"},
                   {"best_trial"}, {"best_top1", true, false, "best top1"},
                   {"best_size_bits", true, false, "best size"}, {"error", false},
                   {"created_ms", false}, {"finished_ms", false}});
  v1::ListSweepsRequest request;
  do {
    ASSIGN_OR_RETURN(v1::ListSweepsResponse page, client->ListSweeps(request));
    for (const v1::Sweep& s : page.sweeps()) {
      listing.AddRow(
          {Cell(s.id()), Cell(s.spec().name()), Cell(StateName(s.state())), Cell(s.spec().strategy()),
           Cell(s.stage()), Cell(TrialsEvaluated(s)), Cell(s.trials_total()), Cell(s.trials_cached()),
           Cell(s.trials_failed()), Cell(s.trials_cancelled()),
           s.has_baseline_top1() ? Cell(s.baseline_top1(), Percent(s.baseline_top1())) : Cell(),
           s.has_best_trial_id() ? Cell(s.best_trial_id()) : Cell(),
           s.has_best_top1() ? Cell(s.best_top1(), Percent(s.best_top1())) : Cell(),
           s.has_best_size_bits() ? Cell(s.best_size_bits(), Bits(s.best_size_bits())) : Cell(),
           s.error().empty() ? Cell() : Cell(s.error()), Cell(s.created_ms()),
           s.finished_ms() ? Cell(s.finished_ms()) : Cell()});
    }
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  listing.Print(OutputFormatFlag(), stdout, {}, "sweeps");
  return absl::OkStatus();
}

}  // namespace bitsweep::cli
