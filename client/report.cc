#include "client/report.h"

#include <cstdio>
#include <filesystem>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/command_line.h"
#include "client/service_commands.h"
#include "common/clock.h"
#include "common/status_macros.h"
#include "common/version.h"
#include "server/coordinator/coordinator.h"
#include "server/frontier/frontier.h"
#include "server/planner/strategy.h"

ABSL_DECLARE_FLAG(int64_t, sweep);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, output_dir);
ABSL_DECLARE_FLAG(bool, log_scale);
ABSL_DECLARE_FLAG(std::string, db);      // local_command.cc
ABSL_DECLARE_FLAG(std::string, server);  // service_commands.cc
ABSL_FLAG(bool, png, false, "figures: also write each figure as PNG (needs rsvg-convert)");

namespace bitsweep::cli {
namespace {

struct Figure {
  std::string name;  // file name without extension
  std::string svg;
};

std::vector<Figure> SweepFigures(const v1::Sweep& sweep, const std::vector<v1::Trial>& trials,
                                 const PlotOptions& options) {
  std::vector<Figure> figures;
  for (const auto& [cost, name] : {std::pair{v1::OBJECTIVE_SIZE, "top1_vs_size"},
                                   std::pair{v1::OBJECTIVE_ENERGY, "top1_vs_energy"},
                                   std::pair{v1::OBJECTIVE_BOPS, "top1_vs_bops"}}) {
    figures.push_back({name, AccuracyCostFigure(sweep, trials, v1::OBJECTIVE_TOP1, cost, options)});
  }
  figures.push_back({"layer_formats", LayerFormatsFigure(sweep, trials)});
  return figures;
}

struct SweepData {
  v1::Sweep sweep;
  std::vector<v1::Trial> trials;
};

// From the coordinator at --server; without one, from the results file --db (as `bitsweep local`
// leaves it), read in this process through the coordinator's own code.
absl::StatusOr<SweepData> FetchSweep() {
  const int64_t id = absl::GetFlag(FLAGS_sweep);
  if (id <= 0) return UsageError("--sweep ID is required");
  SweepData data;
  v1::ListTrialsRequest request;
  request.set_sweep_id(id);
  request.set_page_size(1000);
  if (absl::GetFlag(FLAGS_server).empty()) {
    const std::string db = absl::GetFlag(FLAGS_db);
    if (!std::filesystem::is_regular_file(db)) {
      return UsageError(absl::StrCat("--db ", db, ": no such results database (or give --server "
                                     "ADDR for a running coordinator)"));
    }
    RealClock clock;
    server::CoordinatorOptions options;
    options.db_path = db;
    options.clock = &clock;
    ASSIGN_OR_RETURN(std::unique_ptr<server::Coordinator> coordinator,
                     server::Coordinator::Open(options));
    ASSIGN_OR_RETURN(data.sweep, coordinator->GetSweep(id));
    do {
      ASSIGN_OR_RETURN(v1::ListTrialsResponse page, coordinator->ListTrials(request));
      for (v1::Trial& t : *page.mutable_trials()) data.trials.push_back(std::move(t));
      request.set_page_token(page.next_page_token());
    } while (!request.page_token().empty());
    return data;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client, ConnectFromFlags());
  ASSIGN_OR_RETURN(data.sweep, client->GetSweep(id));
  ASSIGN_OR_RETURN(data.trials, ListAllTrials(*client, request));
  return data;
}

}  // namespace

absl::Status FiguresCommand() {
  const std::string dir = absl::GetFlag(FLAGS_output_dir);
  if (dir.empty()) return UsageError("--output-dir DIR is required");
  ASSIGN_OR_RETURN(SweepData data, FetchSweep());
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::UnavailableError(absl::StrCat(dir, ": ", error.message()));
  PlotOptions options;
  options.log_cost = absl::GetFlag(FLAGS_log_scale);
  for (const Figure& f : SweepFigures(data.sweep, data.trials, options)) {
    for (const char* ext : {".svg", ".png"}) {
      if (std::string(ext) == ".png" && !absl::GetFlag(FLAGS_png)) continue;
      const std::string path = (std::filesystem::path(dir) / (f.name + ext)).string();
      RETURN_IF_ERROR(WriteFigure(path, f.svg));
      std::printf("%s\n", path.c_str());
    }
  }
  return absl::OkStatus();
}

namespace {

std::string Time(int64_t ms) {
  if (ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

std::string Row(const std::string& key, const std::string& value_html) {
  return absl::StrCat("<tr><th>", Escape(key), "</th><td>", value_html, "</td></tr>\n");
}

std::string Joined(const google::protobuf::RepeatedPtrField<std::string>& items,
                   const std::string& empty) {
  if (items.empty()) return Escape(empty);
  return Escape(absl::StrJoin(items, ", "));
}

std::string Format(const v1::QuantParams& q) {
  if (!q.description().empty()) return q.description();
  return q.format().empty() ? "-" : q.format();
}

const char* kStyle = R"css(
body { font-family: "DejaVu Sans", Verdana, Arial, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #222; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin-bottom: 6px; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f5f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.settings th { width: 210px; }
tr.in-margin td:first-child { border-left: 4px solid #1a9850; }
tr.out-margin td:first-child { border-left: 4px solid #d95f02; }
figure { margin: 12px 0 20px 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 13px; }
code { background: #f4f5f7; padding: 1px 4px; border-radius: 3px; }
footer { margin-top: 40px; color: #777; font-size: 12px; }
)css";

}  // namespace

std::string ReportEscape(const v1::Sweep& sweep, const std::vector<v1::Trial>& trials,
                       const PlotOptions& options) {
  const v1::SweepSpec& spec = sweep.spec();
  const v1::FinetuneSpec finetune = server::EffectiveFinetune(spec);
  const double margin = spec.has_error_margin() ? spec.error_margin() : 1.0;
  std::string title = absl::StrCat("bitsweep report: sweep ", sweep.id());
  if (!spec.name().empty()) absl::StrAppend(&title, " (", spec.name(), ")");
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
      Escape(title), "</title>\n<style>", kStyle, "</style>\n</head>\n<body>\n<h1>", Escape(title),
      "</h1>\n<p class=\"sub\">", Escape(spec.strategy()), " sweep, ",
      Escape(StateName(sweep.state())), "; ", sweep.trials_total(), " trials (",
      sweep.trials_succeeded(), " succeeded of which ", sweep.trials_cached(), " cached, ",
      sweep.trials_failed(), " failed, ", sweep.trials_cancelled(), " cancelled)</p>\n");

  // Settings.
  const v1::DatasetRef& data = spec.settings().dataset();
  std::string space;  // grid sweeps: the axes; the others: the candidate formats
  for (const v1::GridAxis& axis : spec.space().axes()) {
    absl::StrAppend(&space, space.empty() ? "" : "<br>", "grid ", Escape(axis.selector()), ".",
                    Escape(axis.role()), " = ", Joined(axis.formats(), "-"));
  }
  if (spec.strategy() != "grid") {
    absl::StrAppend(&space, space.empty() ? "" : "<br>", "weights: ",
                    Joined(spec.space().weight_formats(),
                           absl::StrJoin(server::DefaultWeightFormatsFor(spec.strategy()), ", ")),
                    "<br>activations: ",
                    Joined(spec.space().activation_formats(),
                           absl::StrJoin(server::DefaultActivationFormats(), ", ")));
  }
  std::vector<std::string> objectives;
  for (int o : spec.objectives()) objectives.push_back(server::ObjectiveName(static_cast<v1::Objective>(o)));
  std::string hardware = "default (Horowitz, ISSCC 2014, 45 nm)";
  for (const v1::Trial& t : trials) {
    if (!t.result().hardware_profile().empty()) hardware = t.result().hardware_profile();
  }
  absl::StrAppend(&html, "<h2>Settings</h2>\n<table class=\"settings\">\n",
                  Row("model (SHA-256)", absl::StrCat("<code>", Escape(spec.model_hash()), "</code>")),
                  Row("strategy", Escape(spec.strategy())),
                  Row("error margin", absl::StrFormat("%.2f percentage points of top-1", margin)),
                  Row("fp32 baseline top-1", sweep.has_baseline_top1()
                                                 ? absl::StrFormat("%.2f%%", 100 * sweep.baseline_top1())
                                                 : "not measured"),
                  Row("search space", space),
                  Row("objectives", Escape(objectives.empty() ? "top1, size" : absl::StrJoin(objectives, ", "))));
  absl::StrAppend(
      &html, Row("training split", Escape(data.train().empty() ? "-" : data.train())),
      Row("evaluation split",
          absl::StrCat(Escape(data.eval()), data.eval_limit() > 0 ? absl::StrCat(" (first ", data.eval_limit(), " samples)") : "")),
      Row("preprocessing", Escape(absl::StrCat("mean ", data.mean().empty() ? "-" : absl::StrJoin(data.mean(), ", "),
                                             "; std ", data.std().empty() ? "-" : absl::StrJoin(data.std(), ", ")))),
      Row("calibration samples", absl::StrCat(data.calibration_samples() > 0 ? data.calibration_samples() : 1000)),
      Row("batch", absl::StrCat(spec.settings().batch() > 0 ? spec.settings().batch() : 256)),
      Row("fine-tuning", finetune.steps() > 0
                             ? absl::StrFormat("%d steps%s, learning rate %g", finetune.steps(),
                                               spec.finetune().has_steps() ? "" : " (the strategy's default)",
                                               finetune.learning_rate() > 0 ? finetune.learning_rate() : 0.001)
                             : std::string("none")),
      Row("hardware profile (energy)", Escape(hardware)));
  if (spec.budget() > 0) absl::StrAppend(&html, Row("budget", absl::StrCat(spec.budget())));
  if (spec.population() > 0) absl::StrAppend(&html, Row("population", absl::StrCat(spec.population())));
  if (spec.seed() > 0) absl::StrAppend(&html, Row("seed", absl::StrCat(spec.seed())));
  absl::StrAppend(&html, Row("submitted", Escape(Time(sweep.created_ms()))),
                  Row("finished", Escape(Time(sweep.finished_ms()))));
  if (!sweep.error().empty()) absl::StrAppend(&html, Row("error", Escape(sweep.error())));
  absl::StrAppend(&html, "</table>\n");

  // Figures.
  absl::StrAppend(&html, "<h2>Figures</h2>\n");
  for (const Figure& f : SweepFigures(sweep, trials, options)) {
    const size_t svg_at = f.svg.find("<svg");
    absl::StrAppend(&html, "<figure class=\"", f.name, "\">\n", f.svg.substr(svg_at), "</figure>\n");
  }

  // The top-1 / size frontier.
  const std::vector<v1::FrontierPoint> frontier =
      CostFrontier(sweep, trials, v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE);
  absl::StrAppend(&html, "<h2>Frontier: top-1 vs size</h2>\n<p>The non-dominated trials, by size; "
                  "the ones within the error margin have a green edge. <code>bitsweep export --trial "
                  "ID</code> writes a trial's formats for a hardware flow.</p>\n<table class=\"frontier\">\n"
                  "<tr><th>trial</th><th>stage</th><th>top-1</th><th>top-5</th><th>weight size</th>"
                  "<th>energy</th><th>BOPs</th><th>within margin</th><th>what it varies</th></tr>\n");
  for (const v1::FrontierPoint& p : frontier) {
    const v1::TrialResult& r = p.result();
    absl::StrAppend(&html, "<tr class=\"", p.within_margin() ? "in-margin" : "out-margin", "\"><td class=\"num\">",
                    p.trial_id(), "</td><td>", Escape(p.spec().stage()), "</td><td class=\"num\">",
                    FormatValue(v1::OBJECTIVE_TOP1, r.top1()), "</td><td class=\"num\">",
                    FormatValue(v1::OBJECTIVE_TOP5, r.top5()), "</td><td class=\"num\">",
                    Escape(FormatValue(v1::OBJECTIVE_SIZE, r.size_bits())), "</td><td class=\"num\">",
                    Escape(FormatValue(v1::OBJECTIVE_ENERGY, r.energy_pj())), "</td><td class=\"num\">",
                    Escape(FormatValue(v1::OBJECTIVE_BOPS, r.bops())), "</td><td>",
                    p.within_margin() ? "yes" : "no", "</td><td>", Escape(p.spec().label()), "</td></tr>\n");
  }
  absl::StrAppend(&html, "</table>\n");

  // Per-layer formats of the frontier points within the margin.
  absl::StrAppend(&html, "<h2>Per-layer formats within the margin</h2>\n");
  int shown = 0;
  for (const v1::FrontierPoint& p : frontier) {
    if (!p.within_margin()) continue;
    ++shown;
    const v1::TrialResult& r = p.result();
    absl::StrAppend(&html, "<h3 id=\"trial-", p.trial_id(), "\">trial ", p.trial_id(), ": ",
                    FormatValue(v1::OBJECTIVE_TOP1, r.top1()), " top-1, ",
                    Escape(FormatValue(v1::OBJECTIVE_SIZE, r.size_bits())), ", ",
                    Escape(FormatValue(v1::OBJECTIVE_ENERGY, r.energy_pj())), "</h3>\n<p>",
                    Escape(p.spec().label()), "</p>\n<table class=\"layers\">\n<tr><th>layer</th>"
                    "<th>class</th><th>weights</th><th>inputs</th><th>outputs</th><th>MACs</th>"
                    "<th>weight bits</th><th>energy</th></tr>\n");
    for (const v1::LayerResult& l : r.layers()) {
      absl::StrAppend(&html, "<tr><td>", Escape(l.name()), "</td><td>", Escape(l.layer_class()),
                      "</td><td>", Escape(Format(l.weights())), "</td><td>", Escape(Format(l.inputs())),
                      "</td><td>", Escape(Format(l.outputs())), "</td><td class=\"num\">", l.macs(),
                      "</td><td class=\"num\">", l.weight_bits(), "</td><td class=\"num\">",
                      Escape(FormatValue(v1::OBJECTIVE_ENERGY, l.energy_pj())), "</td></tr>\n");
    }
    absl::StrAppend(&html, "</table>\n");
  }
  if (shown == 0) absl::StrAppend(&html, "<p>No frontier point is within the error margin.</p>\n");
  absl::StrAppend(&html, "<footer>Generated by bitsweep ", ProjectVersion(), " (commit ", GitCommit(),
                  ") at ", Escape(Time(absl::ToUnixMillis(absl::Now()))),
                  ". Accuracies on the evaluation split; sizes are weight storage (biases at 32 "
                  "bits, int formats with their scales and zero points); energy per inference "
                  "from the hardware profile.</footer>\n</body>\n</html>\n");
  return html;
}

absl::Status ReportCommand() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return UsageError("--out report.html is required");
  ASSIGN_OR_RETURN(SweepData data, FetchSweep());
  PlotOptions options;
  options.log_cost = absl::GetFlag(FLAGS_log_scale);
  RETURN_IF_ERROR(WriteFigure(out, ReportEscape(data.sweep, data.trials, options)));
  std::fprintf(stderr, "wrote %s\n", out.c_str());
  return absl::OkStatus();
}

}  // namespace bitsweep::cli
