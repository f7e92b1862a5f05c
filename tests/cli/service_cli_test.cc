// The client commands (submit, watch, sweeps, trials, frontier, export, cancel) and `local`, run
// as processes against a real coordinator and worker, as a user would: output formats, files
// written, exit codes and the messages people see on bad input.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "tests/cli/csv.h"
#include "tests/cli/svg_reader.h"
#include "tests/cli/run_binary.h"
#include "tests/service/process.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;
using testing::Process;

using Result = testing::CommandResult;

Result Bitsweep(const std::string& args) {
  return testing::RunCommandLine(std::string(BITSWEEP_BINARY) + " " + args);
}

int CountLines(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

const std::string kData = std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR;
const std::string kSmallData =
    "--dataset " + kData + " --mean 0.2860 --std 0.3530 --limit 500 --calibration-samples 100";

// One coordinator and one worker for the whole suite.
class ServiceCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // ctest runs each test in its own process, two at a time: one folder per process.
    dir_ = new fs::path(fs::path(::testing::TempDir()) /
                        ("bitsweep_service_cli_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    coordinator_ = new Process(BITSWEEP_COORDINATOR,
                               {"--listen=127.0.0.1:0", "--db=" + (*dir_ / "r.db").string()},
                               (*dir_ / "coordinator.log").string());
    auto port = coordinator_->WaitForLine("listening on port ", std::chrono::seconds(30));
    ASSERT_TRUE(port.has_value()) << coordinator_->Log();
    server_ = new std::string("--server 127.0.0.1:" + port->substr(0, port->find(',')));
    worker_ = new Process(BITSWEEP_WORKER,
                          {"--coordinator=127.0.0.1:" + port->substr(0, port->find(',')),
                           "--threads=1", "--cache-dir=" + (*dir_ / "cache").string()},
                          (*dir_ / "worker.log").string());
  }
  static void TearDownTestSuite() {
    delete worker_;
    delete coordinator_;
    delete server_;
    delete dir_;
  }

  // Submits a small grid sweep and waits for it; returns its id.
  int64_t SubmitGrid() {
    const Result r = Bitsweep("submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " " +
                              kSmallData + " --strategy grid " +
                              "--grid 'conv.weights=fixed:8,fixed:4;fc.weights=fixed:8' --wait");
    EXPECT_EQ(r.exit_code, 0) << r.out << worker_->Log();
    const size_t at = r.out.find("submitted sweep ");
    EXPECT_NE(at, std::string::npos) << r.out;
    return at == std::string::npos ? 0 : std::stoll(r.out.substr(at + 16));
  }

  static fs::path* dir_;
  static Process* coordinator_;
  static Process* worker_;
  static std::string* server_;
};

fs::path* ServiceCliTest::dir_ = nullptr;
Process* ServiceCliTest::coordinator_ = nullptr;
Process* ServiceCliTest::worker_ = nullptr;
std::string* ServiceCliTest::server_ = nullptr;

TEST_F(ServiceCliTest, SubmitWaitPrintsTheFrontierAndTheOtherCommandsReadTheSweep) {
  const int64_t id = SubmitGrid();
  ASSERT_GT(id, 0);
  const std::string sweep = " --sweep " + std::to_string(id);

  Result sweeps = Bitsweep("sweeps " + *server_ + " --format json");
  ASSERT_EQ(sweeps.exit_code, 0) << sweeps.out;
  bool listed = false;
  const nlohmann::json sweeps_doc = nlohmann::json::parse(sweeps.out);
  for (const nlohmann::json& s : sweeps_doc["sweeps"]) {
    if (s["sweep"] == id) listed = s["state"] == "succeeded" && s["total"] == 3;
  }
  EXPECT_TRUE(listed) << sweeps.out;
  Result table = Bitsweep("sweeps " + *server_);
  ASSERT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(table.out.find("succeeded"), std::string::npos) << table.out;

  // baseline + 2 x 1 grid points
  Result trials = Bitsweep("trials " + *server_ + sweep + " --format csv");
  ASSERT_EQ(trials.exit_code, 0) << trials.out;
  EXPECT_EQ(CountLines(trials.out), 1 + 3) << trials.out;
  EXPECT_EQ(trials.out.rfind("trial,stage,state,cached,top1", 0), 0u) << trials.out;

  Result only_grid = Bitsweep("trials " + *server_ + sweep + " --stage grid --format csv");
  ASSERT_EQ(only_grid.exit_code, 0) << only_grid.out;
  EXPECT_EQ(CountLines(only_grid.out), 1 + 2) << only_grid.out;

  const std::string svg = (*dir_ / "frontier.svg").string();
  Result frontier = Bitsweep("frontier " + *server_ + sweep + " --objectives top1,energy --format json");
  ASSERT_EQ(frontier.exit_code, 0) << frontier.out;
  EXPECT_EQ(nlohmann::json::parse(frontier.out)["objectives"],
            nlohmann::json::array({"top1", "energy"})) << frontier.out;
  Result plot = Bitsweep("frontier " + *server_ + sweep + " --objectives top1,energy --plot " + svg);
  ASSERT_EQ(plot.exit_code, 0) << plot.out;
  std::ifstream svg_file(svg);
  std::stringstream svg_text;
  svg_text << svg_file.rdbuf();
  EXPECT_NE(svg_text.str().find("<svg"), std::string::npos);
  EXPECT_NE(svg_text.str().find("<circle"), std::string::npos);

  // Export the first grid trial's formats: every layer with its width and fractional length.
  const size_t row = only_grid.out.find('\n') + 1;
  const int64_t trial = std::stoll(only_grid.out.substr(row));
  const std::string manifest = (*dir_ / "manifest.json").string();
  Result exported = Bitsweep("export " + *server_ + " --trial " + std::to_string(trial) +
                             " --out " + manifest);
  ASSERT_EQ(exported.exit_code, 0) << exported.out;
  std::ifstream manifest_file(manifest);
  std::stringstream manifest_text;
  manifest_text << manifest_file.rdbuf();
  for (const char* field : {"\"layers\"", "\"conv1\"", "\"fractional_bits\"", "\"fixed:8\""}) {
    EXPECT_NE(manifest_text.str().find(field), std::string::npos) << field << manifest_text.str();
  }

  // Cancelling a finished sweep changes nothing.
  Result cancel = Bitsweep("cancel " + *server_ + sweep);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.out;
  EXPECT_NE(cancel.out.find("succeeded"), std::string::npos) << cancel.out;
}

TEST_F(ServiceCliTest, ResubmittingTheSameSweepIsServedFromCache) {
  ASSERT_GT(SubmitGrid(), 0);
  const int64_t again = SubmitGrid();
  Result trials = Bitsweep("trials " + *server_ + " --sweep " + std::to_string(again) +
                           " --format csv");
  ASSERT_EQ(trials.exit_code, 0) << trials.out;
  const auto rows = testing::ParseCsv(trials.out);
  ASSERT_EQ(rows.size(), 1u + 3) << trials.out;
  ASSERT_EQ(rows[0][3], "cached") << trials.out;
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_EQ(rows[i][3], "true") << trials.out;
}

TEST_F(ServiceCliTest, InvalidatedTrialIsEvaluatedAgainAndNoCacheSkipsTheCache) {
  ASSERT_GT(SubmitGrid(), 0);
  const int64_t cached = SubmitGrid();
  auto cached_column = [&](int64_t sweep) {
    Result trials = Bitsweep("trials " + *server_ + " --sweep " + std::to_string(sweep) +
                             " --format csv");
    EXPECT_EQ(trials.exit_code, 0) << trials.out;
    std::vector<std::pair<std::string, std::string>> out;  // (trial id, cached)
    const auto rows = testing::ParseCsv(trials.out);
    for (size_t i = 1; i < rows.size(); ++i) out.emplace_back(rows[i][0], rows[i][3]);
    return out;
  };
  const auto before = cached_column(cached);
  ASSERT_EQ(before.size(), 3u);
  Result invalidate = Bitsweep("trials invalidate " + *server_ + " --trial " + before[1].first);
  ASSERT_EQ(invalidate.exit_code, 0) << invalidate.out;
  EXPECT_NE(invalidate.out.find(" invalidated"), std::string::npos) << invalidate.out;
  Result repeat = Bitsweep("trials invalidate " + *server_ + " --trial " + before[1].first);
  EXPECT_NE(repeat.out.find("was already invalidated"), std::string::npos) << repeat.out;
  // The next identical sweep evaluates that one config again and takes the rest from cache.
  int fresh = 0;
  for (const auto& [id, was_cached] : cached_column(SubmitGrid())) fresh += was_cached == "false";
  EXPECT_EQ(fresh, 1);
  // --no-cache evaluates all of them.
  const Result r = Bitsweep("submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " " +
                            kSmallData + " --strategy grid " +
                            "--grid 'conv.weights=fixed:8,fixed:4;fc.weights=fixed:8' --wait "
                            "--no-cache");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const size_t at = r.out.find("submitted sweep ");
  ASSERT_NE(at, std::string::npos) << r.out;
  for (const auto& [id, was_cached] : cached_column(std::stoll(r.out.substr(at + 16)))) {
    EXPECT_EQ(was_cached, "false") << id;
  }
  Result unknown = Bitsweep("trials invalidate " + *server_ + " --trial 999999");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.out.find("trial 999999 not found"), std::string::npos) << unknown.out;
}

TEST_F(ServiceCliTest, SubmitReadsASweepFile) {
  const std::string file = (*dir_ / "sweep.json").string();
  std::ofstream(file) << R"({"name": "from-file", "strategy": "grid",
      "space": {"axes": [{"selector": "fc", "role": "weights", "formats": ["fixed:8", "fixed:6"]}]},
      "objectives": ["OBJECTIVE_TOP1", "OBJECTIVE_ENERGY"]})";
  const Result r = Bitsweep("submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " " +
                            kSmallData + " --sweep-file " + file + " --strategy grid --wait");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // The file's objectives decide the frontier printed at the end.
  EXPECT_NE(r.out.find("energy"), std::string::npos) << r.out;
  Result sweeps = Bitsweep("sweeps " + *server_ + " --format json");
  ASSERT_EQ(sweeps.exit_code, 0) << sweeps.out;
  const nlohmann::json newest = nlohmann::json::parse(sweeps.out)["sweeps"][0];
  EXPECT_EQ(newest["name"], "from-file") << sweeps.out;
  EXPECT_EQ(newest["total"], 3) << sweeps.out;

  const std::string broken = (*dir_ / "broken.json").string();
  std::ofstream(broken) << R"({"strategy": "grid", "spaces": {}})";
  const Result bad = Bitsweep("submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " " +
                              kSmallData + " --sweep-file " + broken);
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("broken.json: not a SweepSpec"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("spaces"), std::string::npos) << bad.out;
}

TEST_F(ServiceCliTest, ExportWritesAQdqModelForInt8TrialsOnly) {
  const Result r = Bitsweep("submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " " +
                            kSmallData + " --strategy grid --grid " +
                            "'default.weights=int:8:sym:channel,fixed:8;default.activations=int:8'"
                            " --wait");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  Result trials = Bitsweep("trials " + *server_ + " --sweep 1 --stage grid --format csv");
  ASSERT_EQ(trials.exit_code, 0) << trials.out;
  int64_t int8_trial = 0, fixed_trial = 0;
  std::istringstream rows(trials.out);
  std::string row;
  std::getline(rows, row);  // header
  while (std::getline(rows, row)) {
    (row.find("weights int:8") != std::string::npos ? int8_trial : fixed_trial) = std::stoll(row);
  }
  ASSERT_GT(int8_trial, 0) << trials.out;
  ASSERT_GT(fixed_trial, 0) << trials.out;

  const std::string qdq = (*dir_ / "lenet5-int8.onnx").string();
  Result exported = Bitsweep("export " + *server_ + " --trial " + std::to_string(int8_trial) +
                             " --out " + (*dir_ / "m.json").string() + " --qdq " + qdq);
  ASSERT_EQ(exported.exit_code, 0) << exported.out;
  // One byte per weight: the QDQ model is smaller than the fp32 one.
  EXPECT_GT(fs::file_size(qdq), 0u);
  EXPECT_LT(fs::file_size(qdq), fs::file_size(BITSWEEP_LENET5_MODEL) / 2);

  Result refused = Bitsweep("export " + *server_ + " --trial " + std::to_string(fixed_trial) +
                            " --qdq " + (*dir_ / "no.onnx").string());
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_NE(refused.out.find("fixed:8"), std::string::npos) << refused.out;
  EXPECT_FALSE(fs::exists(*dir_ / "no.onnx"));
}

// `figures` writes every figure as SVG and PNG; `report` writes one self-contained HTML page that
// headless Chromium (Debian's chromium) opens offline and renders.
TEST_F(ServiceCliTest, FiguresAndReportOfARealSweep) {
  const int64_t id = SubmitGrid();
  ASSERT_GT(id, 0);
  const std::string sweep = " --sweep " + std::to_string(id);
  const fs::path figures = *dir_ / "figures";
  const Result written = Bitsweep("figures " + *server_ + sweep + " --output-dir " +
                                  figures.string() + " --png");
  ASSERT_EQ(written.exit_code, 0) << written.out;
  for (const char* name : {"top1_vs_size", "top1_vs_energy", "top1_vs_bops", "layer_formats"}) {
    for (const char* ext : {".svg", ".png"}) {
      const fs::path path = figures / (std::string(name) + ext);
      ASSERT_TRUE(fs::exists(path)) << path << written.out;
      EXPECT_GT(fs::file_size(path), 2000u) << path;
    }
  }
  std::ifstream size_svg(figures / "top1_vs_size.svg");
  std::stringstream svg;
  svg << size_svg.rdbuf();
  size_t trials = 0;
  for (const testing::Element& e : testing::ReadElements(svg.str())) trials += e.HasClass("trial");
  EXPECT_EQ(trials, 3u) << svg.str();  // baseline + 2 grid points, every one drawn

  const std::string html_path = (*dir_ / "report.html").string();
  const Result report = Bitsweep("report " + *server_ + sweep + " --out " + html_path);
  ASSERT_EQ(report.exit_code, 0) << report.out;
  std::ifstream html_file(html_path);
  std::stringstream html_text;
  html_text << html_file.rdbuf();
  const std::string html = html_text.str();
  // Self-contained: no scripts, stylesheets, images or fonts fetched from anywhere.
  for (const char* forbidden : {"<script", "<link", "<img", "src=", "url(", "https:", "@import"}) {
    EXPECT_EQ(html.find(forbidden), std::string::npos) << forbidden;
  }
  std::string without_xmlns = std::regex_replace(html, std::regex("xmlns=\"http://www.w3.org/2000/svg\""), "");
  EXPECT_EQ(without_xmlns.find("http:"), std::string::npos);
  int svgs = 0, layer_tables = 0;
  for (const testing::Element& e : testing::ReadElements(html)) {
    svgs += e.tag == "svg";
    layer_tables += e.tag == "table" && e.HasClass("layers");
  }
  EXPECT_EQ(svgs, 4);
  EXPECT_GE(layer_tables, 1) << "per-layer formats of the in-margin points";
  for (const char* part : {"Settings", "error margin", "grid conv.weights = fixed:8, fixed:4",
                           "Frontier: top-1 vs size", "Per-layer formats within the margin",
                           "conv1"}) {
    EXPECT_NE(html.find(part), std::string::npos) << part;
  }

  // Headless Chromium, offline, with a fresh profile: the DOM it built and a screenshot.
  const fs::path profile = *dir_ / "chromium-profile";
  fs::create_directories(profile);
  const std::string chromium =
      "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
      "--disable-component-update --disable-sync --no-first-run --user-data-dir=" +
      profile.string() + " ";
  const Result dom = testing::RunCommandLine(chromium + "--dump-dom file://" + html_path +
                                             " 2>/dev/null");
  if (dom.exit_code != 0 && dom.out.find("<html") == std::string::npos) {
    GTEST_SKIP() << "chromium cannot start here (exit " << dom.exit_code << "): " << dom.out;
  }
  int rendered_svgs = 0, frontier_rows = 0;
  for (const testing::Element& e : testing::ReadElements(dom.out)) {
    rendered_svgs += e.tag == "svg";
    frontier_rows += e.tag == "tr" && (e.HasClass("in-margin") || e.HasClass("out-margin"));
  }
  EXPECT_EQ(rendered_svgs, 4) << dom.out.substr(0, 2000);
  EXPECT_GE(frontier_rows, 1);
  const std::string shot = (*dir_ / "report.png").string();
  const Result screenshot = testing::RunCommandLine(
      chromium + "--window-size=1200,2400 --screenshot=" + shot + " file://" + html_path);
  ASSERT_EQ(screenshot.exit_code, 0) << screenshot.out;
  ASSERT_TRUE(fs::exists(shot)) << screenshot.out;
  EXPECT_GT(fs::file_size(shot), 50000u) << "a rendered page, not a blank one";
}

// CSV and JSON carry the same values at full precision: every double in the CSV reads back to
// the bits the JSON document holds; ids are JSON numbers; jsonl has one object per trial.
TEST_F(ServiceCliTest, ListingsAgreeAcrossFormats) {
  const int64_t id = SubmitGrid();
  ASSERT_GT(id, 0);
  const std::string args = "trials " + *server_ + " --sweep " + std::to_string(id);
  const Result csv = Bitsweep(args + " --format csv");
  const Result json = Bitsweep(args + " --format json");
  const Result jsonl = Bitsweep(args + " --format jsonl");
  ASSERT_EQ(csv.exit_code, 0) << csv.out;
  ASSERT_EQ(json.exit_code, 0) << json.out;
  ASSERT_EQ(jsonl.exit_code, 0) << jsonl.out;
  const auto rows = testing::ParseCsv(csv.out);
  const nlohmann::json doc = nlohmann::json::parse(json.out);
  ASSERT_EQ(doc["sweep_id"], id);
  ASSERT_EQ(rows.size(), doc["trials"].size() + 1) << csv.out;
  EXPECT_EQ(CountLines(jsonl.out), static_cast<int>(doc["trials"].size())) << jsonl.out;
  const std::vector<std::string>& header = rows[0];
  for (size_t i = 1; i < rows.size(); ++i) {
    const nlohmann::json& trial = doc["trials"][i - 1];
    ASSERT_EQ(rows[i].size(), header.size()) << csv.out;
    EXPECT_TRUE(trial["trial"].is_number_integer()) << trial;
    for (size_t c = 0; c < header.size(); ++c) {
      const nlohmann::json& v = trial[header[c]];
      if (v.is_number_float()) {
        EXPECT_EQ(std::strtod(rows[i][c].c_str(), nullptr), v.get<double>()) << header[c];
      } else if (v.is_number_integer()) {
        EXPECT_EQ(std::stoll(rows[i][c]), v.get<int64_t>()) << header[c];
      } else if (v.is_string()) {
        EXPECT_EQ(rows[i][c], v.get<std::string>()) << header[c];
      } else if (v.is_object()) {
        EXPECT_EQ(nlohmann::json::parse(rows[i][c]), v) << header[c];
      }
    }
    // Grid labels hold commas ("conv weights fixed:8, fc weights fixed:8"): quoted, read back.
    if (trial["stage"] == "grid") {
      EXPECT_NE(trial["label"].get<std::string>().find(", "), std::string::npos) << trial;
    }
    EXPECT_TRUE(trial["config"].is_object()) << trial;
  }
  // submit --wait in a machine format: stdout holds the frontier document alone.
  const Result waited = testing::RunCommandLine(
      "{ " + std::string(BITSWEEP_BINARY) + " submit " + *server_ + " --model " +
      BITSWEEP_LENET5_MODEL + " " + kSmallData +
      " --strategy grid --grid 'conv.weights=fixed:8' --wait --format json 2>/dev/null; }");
  ASSERT_EQ(waited.exit_code, 0) << waited.out;
  EXPECT_FALSE(nlohmann::json::parse(waited.out)["points"].empty()) << waited.out;

  const Result frontier = Bitsweep("frontier " + *server_ + " --sweep " + std::to_string(id) +
                                   " --format csv");
  ASSERT_EQ(frontier.exit_code, 0) << frontier.out;
  EXPECT_EQ(frontier.out.rfind("trial,top1,top5,size_bits,energy_pj,bops,within_margin", 0), 0u)
      << frontier.out;
}

// A cancelled sweep: watch (and submit --wait) exit 1 and say so, with the cancelled count; off a
// terminal one plain line per change, on a terminal one line redrawn within its width.
TEST_F(ServiceCliTest, WatchOfACancelledSweepExitsNonZero) {
  // The whole test split makes trials slow enough to cancel the sweep before it ends.
  const Result submitted = Bitsweep(
      "submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " --dataset " + kData +
      " --mean 0.2860 --std 0.3530 --strategy ristretto");
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out;
  const std::string id = std::to_string(std::stoll(submitted.out.substr(16)));
  const Result cancel = Bitsweep("cancel " + *server_ + " --sweep " + id);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.out;

  const Result watch = Bitsweep("watch " + *server_ + " --sweep " + id);
  EXPECT_EQ(watch.exit_code, 1) << watch.out;
  EXPECT_NE(watch.out.find("sweep " + id + " was cancelled"), std::string::npos) << watch.out;
  EXPECT_EQ(watch.out.find('\r'), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find("sweep " + id + " cancelled "), std::string::npos) << watch.out;
  EXPECT_EQ(watch.out.find(" 0 cancelled)"), std::string::npos) << watch.out;
  // Cancelled trials are not counted as evaluated: never "N/N" for a cancelled sweep.
  const size_t counts = watch.out.find("sweep " + id + " cancelled ");
  ASSERT_NE(counts, std::string::npos);
  const std::string fraction = watch.out.substr(counts, watch.out.find(' ', counts + 20) - counts);
  const size_t slash = fraction.rfind('/');
  ASSERT_NE(slash, std::string::npos) << fraction;
  EXPECT_LT(std::stoll(fraction.substr(fraction.rfind(' ', slash) + 1)),
            std::stoll(fraction.substr(slash + 1))) << fraction;

  // On a terminal (script(1) gives it one; 50 columns): redrawn in place, never wider.
  const Result tty = testing::RunCommandLine(
      "COLUMNS=50 script -qec '" + std::string(BITSWEEP_BINARY) + " watch " + *server_ +
      " --sweep " + id + "' /dev/null");
  EXPECT_EQ(tty.exit_code, 1) << tty.out;
  const size_t cr = tty.out.find('\r');
  ASSERT_NE(cr, std::string::npos) << tty.out;
  const std::string drawn = tty.out.substr(cr + 1, tty.out.find("\x1b[K", cr) - cr - 1);
  EXPECT_LE(drawn.size(), 49u) << drawn;
  EXPECT_EQ(drawn.rfind("[", 0), 0u) << drawn;
  EXPECT_NE(drawn.find('x'), std::string::npos) << drawn;  // cancelled trials in the bar

  // submit --wait of a sweep cancelled meanwhile (the next id) exits 1 the same way.
  const std::string next = std::to_string(std::stoll(id) + 1);
  const std::string b = BITSWEEP_BINARY;
  const Result wait = testing::RunCommandLine(
      "{ ( until " + b + " cancel " + *server_ + " --sweep " + next + " >/dev/null 2>&1; do sleep 0.2;"
      " done ) & " + b + " submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " --dataset " +
      kData + " --mean 0.2860 --std 0.3530 --strategy ristretto --wait; rc=$?; wait; exit $rc; }");
  EXPECT_EQ(wait.exit_code, 1) << wait.out;
  EXPECT_NE(wait.out.find("sweep " + next + " was cancelled"), std::string::npos) << wait.out;
}

TEST_F(ServiceCliTest, ErrorsNameTheProblem) {
  Result unknown = Bitsweep("frontier " + *server_ + " --sweep 999999");
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out;
  EXPECT_NE(unknown.out.find("999999"), std::string::npos) << unknown.out;

  Result bad_format = Bitsweep("submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL + " " +
                               kSmallData + " --strategy ristretto --weight-formats fixd:8");
  EXPECT_EQ(bad_format.exit_code, 1) << bad_format.out;
  EXPECT_NE(bad_format.out.find("fixd:8"), std::string::npos) << bad_format.out;

  Result bad_strategy = Bitsweep("submit " + *server_ + " --model " + BITSWEEP_LENET5_MODEL +
                                 " " + kSmallData + " --strategy exhaustive");
  EXPECT_EQ(bad_strategy.exit_code, 1) << bad_strategy.out;
  EXPECT_NE(bad_strategy.out.find("exhaustive"), std::string::npos) << bad_strategy.out;

  Result not_onnx = Bitsweep("submit " + *server_ + " --model " + std::string(__FILE__) + " " +
                             kSmallData);
  EXPECT_EQ(not_onnx.exit_code, 1) << not_onnx.out;
  EXPECT_NE(not_onnx.out.find("service_cli_test.cc"), std::string::npos) << not_onnx.out;

  Result missing = Bitsweep("trials " + *server_);
  EXPECT_EQ(missing.exit_code, 2) << missing.out;
  EXPECT_NE(missing.out.find("--sweep"), std::string::npos) << missing.out;

  Result unreachable = Bitsweep("sweeps --server 127.0.0.1:1");
  EXPECT_EQ(unreachable.exit_code, 1) << unreachable.out;
  EXPECT_NE(unreachable.out.find("unreachable"), std::string::npos) << unreachable.out;
}

TEST(LocalCliTest, LocalRunsASweepInOneProcessAndPrintsItsFrontier) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_local_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Result r = Bitsweep("local --model " + std::string(BITSWEEP_LENET5_MODEL) + " " +
                            kSmallData + " --strategy ristretto --weight-formats fixed:8,fixed:4 " +
                            "--activation-formats fixed:8 --workers 2 --db " +
                            (dir / "local.db").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("frontier of sweep 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("combined"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "local.db"));

  const Result bad = Bitsweep("local --model zoo:vgg " + kSmallData);
  EXPECT_EQ(bad.exit_code, 2) << bad.out;
  EXPECT_NE(bad.out.find("zoo:vgg"), std::string::npos) << bad.out;
}

// BITSWEEP_TOKEN reaches a coordinator that requires a client token; --token overrides it.
TEST(TokenCliTest, TokenFromTheEnvironmentOrTheFlag) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_token_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  Process coordinator(BITSWEEP_COORDINATOR,
                      {"--listen=127.0.0.1:0", "--db=" + (dir / "r.db").string(),
                       "--client-token=s3cret"},
                      (dir / "coordinator.log").string());
  auto port = coordinator.WaitForLine("listening on port ", std::chrono::seconds(30));
  ASSERT_TRUE(port.has_value()) << coordinator.Log();
  const std::string env = "BITSWEEP_SERVER=127.0.0.1:" + port->substr(0, port->find(',')) + " ";
  const std::string b = std::string(BITSWEEP_BINARY) + " sweeps";
  EXPECT_EQ(testing::RunCommandLine(env + "BITSWEEP_TOKEN=s3cret " + b).exit_code, 0);
  EXPECT_EQ(testing::RunCommandLine(env + b + " --token s3cret").exit_code, 0);
  const Result none = testing::RunCommandLine(env + b);
  EXPECT_EQ(none.exit_code, 1) << none.out;
  const Result wrong = testing::RunCommandLine(env + "BITSWEEP_TOKEN=s3cret " + b + " --token nope");
  EXPECT_EQ(wrong.exit_code, 1) << wrong.out;
  // --token-file: the file's first line, ahead of the environment; a missing file is named.
  std::ofstream(dir / "token") << "s3cret\n";
  EXPECT_EQ(testing::RunCommandLine(env + "BITSWEEP_TOKEN=nope " + b + " --token-file " +
                                    (dir / "token").string())
                .exit_code,
            0);
  const Result missing = testing::RunCommandLine(env + b + " --token-file " +
                                                 (dir / "absent").string());
  EXPECT_EQ(missing.exit_code, 1) << missing.out;
  EXPECT_NE(missing.out.find((dir / "absent").string() + ": cannot open"), std::string::npos)
      << missing.out;
}

// `watch` and `submit --wait` follow a sweep across a coordinator restart: the stream ends
// (UNAVAILABLE), they reconnect with backoff to the new process on the same port and database,
// and exit 0 when the sweep succeeds there; `--reconnect-seconds 0` gives up at once.
TEST(ReconnectCliTest, WatchAndSubmitWaitSurviveACoordinatorRestart) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_reconnect_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<std::string> coordinator_args = {"--db=" + (dir / "r.db").string()};
  auto first = std::make_unique<Process>(
      BITSWEEP_COORDINATOR, std::vector<std::string>{"--listen=127.0.0.1:0", coordinator_args[0]},
      (dir / "coordinator1.log").string());
  auto port_line = first->WaitForLine("listening on port ", std::chrono::seconds(30));
  ASSERT_TRUE(port_line.has_value()) << first->Log();
  const std::string port = port_line->substr(0, port_line->find(','));
  const std::string server = " --server 127.0.0.1:" + port;
  const std::string b = std::string(BITSWEEP_BINARY);
  // No worker yet: the sweeps wait in the queue.
  const Result submitted =
      Bitsweep("submit" + server + " --model " + BITSWEEP_LENET5_MODEL + " " + kSmallData +
               " --strategy grid --grid 'conv.weights=fixed:8'");
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out;
  const std::string id = std::to_string(std::stoll(submitted.out.substr(16)));
  Process watch("/bin/sh", {"-c", b + " watch" + server + " --sweep " + id + "; echo exit=$?"},
                (dir / "watch.log").string());
  Process wait("/bin/sh",
               {"-c", b + " submit" + server + " --model " + BITSWEEP_LENET5_MODEL + " " +
                          kSmallData + " --strategy grid --grid 'fc.weights=fixed:4' --wait; " +
                          "echo exit=$?"},
               (dir / "wait.log").string());
  ASSERT_TRUE(watch.WaitForLine("queued", std::chrono::seconds(30)).has_value()) << watch.Log();
  ASSERT_TRUE(wait.WaitForLine("queued", std::chrono::seconds(30)).has_value()) << wait.Log();
  // A third follower with --reconnect-seconds 0, while the first coordinator stops under it.
  const Result give_up = testing::RunCommandLine(
      b + " watch" + server + " --sweep " + id + " --reconnect-seconds 0 2>&1 & W=$!; sleep 1; kill -TERM " +
      std::to_string(first->pid()) + "; wait $W");
  first->Kill(SIGTERM);
  EXPECT_EQ(give_up.exit_code, 1) << give_up.out;
  EXPECT_NE(give_up.out.find("could not reconnect"), std::string::npos) << give_up.out;

  std::this_thread::sleep_for(std::chrono::seconds(2));  // both clients are reconnecting now
  Process second(BITSWEEP_COORDINATOR, {"--listen=127.0.0.1:" + port, coordinator_args[0]},
                 (dir / "coordinator2.log").string());
  ASSERT_TRUE(second.WaitForLine("listening on port ", std::chrono::seconds(30)).has_value())
      << second.Log();
  Process worker(BITSWEEP_WORKER,
                 {"--coordinator=127.0.0.1:" + port, "--threads=1",
                  "--cache-dir=" + (dir / "cache").string()},
                 (dir / "worker.log").string());
  for (Process* client : {&watch, &wait}) {
    const std::optional<std::string> exit = client->WaitForLine("exit=", std::chrono::seconds(240));
    ASSERT_TRUE(exit.has_value()) << client->Log() << worker.Log();
    EXPECT_EQ(*exit, "0") << client->Log() << second.Log() << worker.Log();
    const std::string log = client->Log();
    EXPECT_NE(log.find("lost the coordinator"), std::string::npos) << log;
    EXPECT_NE(log.find("reconnected to the coordinator after"), std::string::npos) << log;
    EXPECT_NE(log.find("succeeded"), std::string::npos) << log;
  }
}

// The coordinator takes its tokens from BITSWEEP_CLIENT_TOKEN / BITSWEEP_WORKER_TOKEN when no
// flag names them (flags show in ps).
TEST(TokenCliTest, CoordinatorTokensFromTheEnvironment) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_token_env_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  setenv("BITSWEEP_CLIENT_TOKEN", "from-env", /*overwrite=*/1);
  Process coordinator(BITSWEEP_COORDINATOR,
                      {"--listen=127.0.0.1:0", "--db=" + (dir / "r.db").string()},
                      (dir / "coordinator.log").string());
  unsetenv("BITSWEEP_CLIENT_TOKEN");
  auto port = coordinator.WaitForLine("listening on port ", std::chrono::seconds(30));
  ASSERT_TRUE(port.has_value()) << coordinator.Log();
  const std::string b = std::string(BITSWEEP_BINARY) + " sweeps --server 127.0.0.1:" +
                        port->substr(0, port->find(','));
  EXPECT_EQ(testing::RunCommandLine(b + " --token from-env").exit_code, 0);
  const Result none = testing::RunCommandLine(b);
  EXPECT_EQ(none.exit_code, 1) << none.out;
  EXPECT_NE(none.out.find("requires a bearer token"), std::string::npos) << none.out;
}

// Every example query of schema/README.md, run by the sqlite3 shell on the database of a real
// sweep (sensitivity, so that every stage and table has rows): each runs without error, each
// returns rows (but the failed-trial / lease one: nothing failed), and the per-layer columns,
// addressed by layer_index, are filled for every trial (by node name they were NULL for models
// whose layers are not called conv1, fc1, ...).
TEST(LocalCliTest, SchemaReadmeQueriesRunOnARealSweep) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_schema_readme_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db = (dir / "results.db").string();
  const Result r = Bitsweep("local --model " + std::string(BITSWEEP_LENET5_MODEL) + " " +
                            kSmallData + " --strategy sensitivity --weight-formats fixed:8,fixed:4 " +
                            "--activation-formats fixed:8 --workers 2 --db " + db);
  ASSERT_EQ(r.exit_code, 0) << r.out;

  std::ifstream readme_file(BITSWEEP_SCHEMA_README);
  std::stringstream readme;
  readme << readme_file.rdbuf();
  const std::string text = readme.str();
  int blocks = 0;
  for (size_t at = text.find("```sql\n"); at != std::string::npos;
       at = text.find("```sql\n", at + 1)) {
    const size_t begin = at + 7, end = text.find("```", begin);
    ASSERT_NE(end, std::string::npos);
    const std::string sql = text.substr(begin, end - begin);
    const fs::path file = dir / ("query" + std::to_string(++blocks) + ".sql");
    std::ofstream(file) << sql;
    const Result q = testing::RunCommandLine("sqlite3 -bail -header -csv 'file:" + db +
                                             "?mode=ro' < " + file.string());
    EXPECT_EQ(q.exit_code, 0) << sql << q.out;
    EXPECT_EQ(q.out.find("Error"), std::string::npos) << sql << q.out;
    const auto rows = testing::ParseCsv(q.out);
    if (sql.find("FROM leases") == std::string::npos) {
      EXPECT_GE(rows.size(), 2u) << "no rows from\n" << sql << q.out;
    }
    if (sql.find("layer_index = 0") != std::string::npos) {
      ASSERT_GE(rows.size(), 2u) << q.out;
      for (size_t c = 0; c < rows[0].size(); ++c) {
        if (rows[0][c].rfind("l", 0) != 0 || rows[0][c].find('_') == std::string::npos) continue;
        for (size_t i = 1; i < rows.size(); ++i) {
          EXPECT_FALSE(rows[i][c].empty()) << rows[0][c] << " of row " << i << "\n" << q.out;
        }
      }
    }
  }
  EXPECT_GE(blocks, 10);

  // The report of the same sweep straight from the file, no coordinator running.
  const std::string html = (dir / "report.html").string();
  const Result report = Bitsweep("report --db " + db + " --sweep 1 --out " + html);
  ASSERT_EQ(report.exit_code, 0) << report.out;
  std::ifstream html_file(html);
  std::stringstream html_text;
  html_text << html_file.rdbuf();
  int svgs = 0;
  for (const testing::Element& e : testing::ReadElements(html_text.str())) svgs += e.tag == "svg";
  EXPECT_EQ(svgs, 4);
  EXPECT_NE(html_text.str().find("sensitivity"), std::string::npos);
  const Result missing = Bitsweep("report --db " + (dir / "nope.db").string() + " --sweep 1 --out " + html);
  EXPECT_EQ(missing.exit_code, 2) << missing.out;
  EXPECT_NE(missing.out.find("nope.db: no such results database"), std::string::npos) << missing.out;
  EXPECT_FALSE(fs::exists(dir / "nope.db"));
}

TEST(LocalCliTest, EvolutionarySweepRunsItsGenerationsWithinTheBudget) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_local_evo_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string common = "local --model " + std::string(BITSWEEP_LENET5_MODEL) + " " +
                             kSmallData + " --strategy evolutionary --weight-formats " +
                             "fixed:8,fixed:4 --activation-formats fixed:8,fixed:4 --workers 2 ";
  const Result r = Bitsweep(common + "--budget 6 --population 3 --seed 2 --db " +
                            (dir / "evo.db").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // The baseline and two generations of three.
  EXPECT_NE(r.out.find("sweep 1 finished: 7 trials"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("generation 1 #1 (uniform)"), std::string::npos) << r.out;

  const Result bad = Bitsweep(common + "--population 1 --db " + (dir / "bad.db").string());
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("population: must be 0"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace bitsweep
