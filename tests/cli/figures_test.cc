// The figures on a made-up sweep whose frontier is computed here by brute force: the elements
// each figure must hold (every trial, the frontier points, the staircase through them, the
// baseline, the margin band, the labels of the in-margin points, the legend, ticks with units,
// the heatmap's cells), and each figure rendered to PNG by rsvg-convert (Debian's librsvg2-bin).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <tuple>
#include <string>
#include <vector>

#include "client/plot.h"
#include "gtest/gtest.h"
#include "tests/cli/run_binary.h"
#include "tests/cli/svg_reader.h"

namespace bitsweep::cli {
namespace {

namespace fs = std::filesystem;
using testing::Element;
using testing::ReadElements;

struct Made {
  int64_t id;
  double top1;
  double size_kib;
  int conv_bits, fc_bits;
  v1::TrialState state = v1::TRIAL_SUCCEEDED;
};

// Baseline 90%, margin 1 point: in the margin means top-1 >= 89%.
const Made kTrials[] = {
    {1, 0.905, 240, 32, 32}, {2, 0.903, 60, 8, 8},  {3, 0.899, 45, 8, 6},
    {4, 0.893, 32, 4, 6},    {5, 0.880, 30, 4, 4},  {6, 0.850, 100, 8, 8},
    {7, 0.300, 20, 2, 2},    {8, 0.895, 70, 8, 16}, {9, 0, 0, 2, 2, v1::TRIAL_FAILED},
    {10, 0.903, 60, 8, 8},  // the same result as trial 2 (a cached duplicate)
};

v1::Sweep MadeSweep() {
  v1::Sweep sweep;
  sweep.set_id(7);
  sweep.mutable_spec()->set_strategy("grid");
  sweep.mutable_spec()->set_error_margin(1.0);
  sweep.set_baseline_top1(0.90);
  return sweep;
}

std::vector<v1::Trial> MadeTrials() {
  std::vector<v1::Trial> trials;
  for (const Made& m : kTrials) {
    v1::Trial t;
    t.set_id(m.id);
    t.set_sweep_id(7);
    t.set_state(m.state);
    t.mutable_spec()->set_label("trial " + std::to_string(m.id));
    v1::TrialResult* r = t.mutable_result();
    r->set_top1(m.top1);
    r->set_top5(std::min(1.0, m.top1 + 0.05));
    r->set_size_bits(static_cast<int64_t>(m.size_kib * 8 * 1024));
    r->set_energy_pj(m.size_kib * 1e5);  // 2 to 24 µJ
    r->set_bops(static_cast<int64_t>(m.size_kib * 4e6));
    for (const auto& [name, cls, bits] : {std::tuple{"conv1", "conv", m.conv_bits},
                                          std::tuple{"fc1", "fc", m.fc_bits}}) {
      v1::LayerResult* l = r->add_layers();
      l->set_name(name);
      l->set_layer_class(cls);
      l->mutable_weights()->set_bits(bits);
      l->mutable_weights()->set_format(bits >= 32 ? "fp32" : "fixed:" + std::to_string(bits));
      l->mutable_inputs()->set_bits(8);
      l->mutable_outputs()->set_bits(8);
    }
    trials.push_back(t);
  }
  return trials;
}

// The top-1 / size frontier by brute force: succeeded trials no other trial dominates, the first
// of exact duplicates only. Ids, cheapest first.
std::vector<int64_t> BruteForceFrontier() {
  std::vector<const Made*> ok;
  for (const Made& m : kTrials) {
    if (m.state == v1::TRIAL_SUCCEEDED) ok.push_back(&m);
  }
  std::vector<std::pair<double, int64_t>> frontier;
  for (const Made* p : ok) {
    bool dominated = false;
    for (const Made* q : ok) {
      const bool same = q->top1 == p->top1 && q->size_kib == p->size_kib;
      if ((q->top1 >= p->top1 && q->size_kib <= p->size_kib && !same) || (same && q->id < p->id)) {
        dominated = true;
      }
    }
    if (!dominated) frontier.emplace_back(p->size_kib, p->id);
  }
  std::sort(frontier.begin(), frontier.end());
  std::vector<int64_t> ids;
  for (const auto& f : frontier) ids.push_back(f.second);
  return ids;
}

std::vector<const Element*> WithClass(const std::vector<Element>& all, const std::string& c) {
  std::vector<const Element*> out;
  for (const Element& e : all) {
    if (e.HasClass(c)) out.push_back(&e);
  }
  return out;
}

// Writes the SVG, renders it with rsvg-convert and checks the PNG's signature and size.
void RenderAndCheck(const std::string& svg, const std::string& name, uintmax_t min_bytes = 10000) {
  const fs::path dir = fs::path(::testing::TempDir()) / "bitsweep_figures_test";
  fs::create_directories(dir);
  const fs::path svg_path = dir / (name + ".svg"), png_path = dir / (name + ".png");
  std::ofstream(svg_path) << svg;
  const testing::CommandResult r = testing::RunCommandLine(
      "rsvg-convert --format png --output " + png_path.string() + " " + svg_path.string());
  ASSERT_EQ(r.exit_code, 0) << "rsvg-convert (Debian package librsvg2-bin): " << r.out;
  std::ifstream png(png_path, std::ios::binary);
  std::string header(24, '\0');
  png.read(header.data(), header.size());
  ASSERT_EQ(header.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<unsigned char>(header[at])) << 24) |
           (static_cast<uint32_t>(static_cast<unsigned char>(header[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<unsigned char>(header[at + 2])) << 8) |
           static_cast<uint32_t>(static_cast<unsigned char>(header[at + 3]));
  };
  const Element& root = ReadElements(svg).front();
  EXPECT_EQ(be32(16), static_cast<uint32_t>(root.Number("width"))) << name;
  EXPECT_EQ(be32(20), static_cast<uint32_t>(root.Number("height"))) << name;
  EXPECT_GT(fs::file_size(png_path), min_bytes) << name << ": a figure, not a blank page";
}

TEST(FiguresTest, AccuracyVsSizeShowsEveryTrialTheStaircaseBaselineMarginAndLabels) {
  const std::string svg = AccuracyCostFigure(MadeSweep(), MadeTrials(), v1::OBJECTIVE_TOP1,
                                             v1::OBJECTIVE_SIZE, PlotOptions{});
  const std::vector<Element> all = ReadElements(svg);
  ASSERT_EQ(all.front().tag, "svg");

  // Every succeeded trial once (9: not the failed one), as a circle or below the axis.
  EXPECT_EQ(WithClass(all, "trial").size(), 9u) << svg;
  // 30% is far under the region shown: trial 7 (a frontier point too) sits on the bottom edge.
  ASSERT_EQ(WithClass(all, "below-axis").size(), 2u);

  // The frontier points are exactly the brute-force frontier, cheapest first, and the ones in
  // the margin are marked and labeled with their ids.
  const std::vector<int64_t> expected = BruteForceFrontier();
  EXPECT_EQ(expected, (std::vector<int64_t>{7, 5, 4, 3, 2, 1}));
  const auto points = WithClass(all, "frontier-point");
  ASSERT_EQ(points.size(), expected.size());
  std::set<std::string> labels;
  for (const Element* l : WithClass(all, "point-label")) labels.insert(l->text);
  EXPECT_EQ(labels, (std::set<std::string>{"#1", "#2", "#3", "#4"}));
  EXPECT_EQ(WithClass(all, "in-margin").size(), 4u);
  for (size_t i = 1; i < points.size(); ++i) {
    EXPECT_GT(points[i]->Number("cx"), points[i - 1]->Number("cx"));  // by size
    EXPECT_LE(points[i]->Number("cy"), points[i - 1]->Number("cy"));  // accuracy never drops
  }

  // The staircase: horizontal then vertical moves only, right and up, through every point.
  const auto line = WithClass(all, "frontier-line");
  ASSERT_EQ(line.size(), 1u);
  const std::string d = line[0]->attributes.at("d");
  std::regex move(R"(([MHV])\s*([-\d.]+)(?:\s+([-\d.]+))?)");
  double x = 0, y = 0;
  std::vector<std::pair<double, double>> corners;
  char last = 0;
  for (auto it = std::sregex_iterator(d.begin(), d.end(), move); it != std::sregex_iterator(); ++it) {
    const char op = (*it)[1].str()[0];
    if (op == 'M') x = std::stod((*it)[2]), y = std::stod((*it)[3]);
    if (op == 'H') {
      EXPECT_GE(std::stod((*it)[2]), x) << d;
      x = std::stod((*it)[2]);
    }
    if (op == 'V') {
      EXPECT_LE(std::stod((*it)[2]), y) << d;
      y = std::stod((*it)[2]);
    }
    EXPECT_NE(op, last) << d;  // alternating: a staircase, never a slanted line
    last = op;
    if (op != 'H') corners.emplace_back(x, y);
  }
  ASSERT_EQ(corners.size(), points.size()) << d;
  for (size_t i = 0; i < points.size(); ++i) {
    EXPECT_NEAR(corners[i].first, points[i]->Number("cx"), 0.11) << d;
    EXPECT_NEAR(corners[i].second, points[i]->Number("cy"), 0.11) << d;
  }

  // Baseline at 90% and the band down to 89%, against the y ticks' scale.
  const auto baseline = WithClass(all, "baseline");
  const auto band = WithClass(all, "margin-band");
  ASSERT_EQ(baseline.size(), 1u);
  ASSERT_EQ(band.size(), 1u);
  std::map<double, double> ytick_y;  // percent -> y
  for (const Element* t : WithClass(all, "ytick")) {
    ytick_y[std::stod(t->text.substr(0, t->text.size() - 1))] = t->Number("y") - 4;
  }
  ASSERT_GE(ytick_y.size(), 3u) << svg;
  const double per_point = (ytick_y.begin()->second - ytick_y.rbegin()->second) /
                           (ytick_y.rbegin()->first - ytick_y.begin()->first);
  auto y_of = [&](double percent) {
    return ytick_y.begin()->second - (percent - ytick_y.begin()->first) * per_point;
  };
  EXPECT_NEAR(baseline[0]->Number("y1"), y_of(90), 0.2);
  EXPECT_NEAR(band[0]->Number("y"), y_of(90), 0.2);
  EXPECT_NEAR(band[0]->Number("y") + band[0]->Number("height"), y_of(89), 0.2);

  // Size ticks in KiB at round numbers, a legend naming what is drawn.
  EXPECT_NE(svg.find("weight size (KiB)"), std::string::npos);
  for (const Element* t : WithClass(all, "xtick")) {
    const double v = std::stod(t->text);
    EXPECT_EQ(std::fmod(v, 10), 0) << t->text;
  }
  ASSERT_EQ(WithClass(all, "legend").size(), 1u);
  for (const char* entry : {"evaluated trial (9)", "Pareto frontier", "fp32 baseline 90.00%",
                            "error margin 1 pp", "1 trial below"}) {
    EXPECT_NE(svg.find(entry), std::string::npos) << entry;
  }
  RenderAndCheck(svg, "top1_vs_size");
}

TEST(FiguresTest, EnergyAndBopsOnLogScalesHaveUnitsAndRoundTicks) {
  for (const auto& [cost, unit] : {std::pair{v1::OBJECTIVE_ENERGY, std::string("(µJ)")},
                                   std::pair{v1::OBJECTIVE_BOPS, std::string("(MBOPs)")}}) {
    for (const bool log : {false, true}) {
      PlotOptions options;
      options.log_cost = log;
      const std::string svg = AccuracyCostFigure(MadeSweep(), MadeTrials(), v1::OBJECTIVE_TOP1,
                                                 cost, options);
      const std::vector<Element> all = ReadElements(svg);
      EXPECT_NE(svg.find(unit + (log ? ", log scale" : "")), std::string::npos) << unit << svg;
      EXPECT_EQ(WithClass(all, "frontier-point").size(), 6u);
      const auto ticks = WithClass(all, "xtick");
      ASSERT_GE(ticks.size(), 3u) << svg;
      for (const Element* t : ticks) {
        const double v = std::stod(t->text);
        const double mantissa = v / std::pow(10, std::floor(std::log10(v) + 1e-9));
        if (log) {
          EXPECT_NEAR(mantissa, std::round(mantissa), 1e-6) << t->text;  // 1..9 x 10^k
        } else {
          EXPECT_TRUE(std::fabs(mantissa * 2 - std::round(mantissa * 2)) < 1e-6 ||
                      std::fabs(mantissa * 4 - std::round(mantissa * 4)) < 1e-6)
              << t->text;
        }
      }
      RenderAndCheck(svg, std::string(cost == v1::OBJECTIVE_ENERGY ? "energy" : "bops") +
                              (log ? "_log" : ""));
    }
  }
}

TEST(FiguresTest, LayerHeatmapHasACellPerLayerAndFrontierConfig) {
  const std::string svg = LayerFormatsFigure(MadeSweep(), MadeTrials());
  const std::vector<Element> all = ReadElements(svg);
  const auto cells = WithClass(all, "cell");
  ASSERT_EQ(cells.size(), 2u * 6u) << svg;  // conv1, fc1 x the six frontier points
  // Rows in network order, columns cheapest first: trial 4 (column 3) has conv1 at 4 bits and
  // fc1 at 6, trial 1 (last) is fp32.
  std::vector<std::string> texts;
  for (const Element& e : all) {
    if (e.tag == "text" && (e.text.rfind("w ", 0) == 0 || e.text.rfind("a ", 0) == 0)) {
      texts.push_back(e.text);
    }
  }
  ASSERT_EQ(texts.size(), 24u);
  EXPECT_EQ(texts[2 * 2], "w 4");       // conv1, column 3 (trial 4)
  EXPECT_EQ(texts[2 * 2 + 1], "a 8");
  EXPECT_EQ(texts[12 + 2 * 2], "w 6");  // fc1, column 3
  EXPECT_EQ(texts[2 * 5], "w fp32");    // conv1, trial 1
  int in_margin = 0;
  for (const Element& e : all) in_margin += e.HasClass("column") && e.HasClass("in-margin");
  EXPECT_EQ(in_margin, 4);
  RenderAndCheck(svg, "layer_formats");
}

TEST(FiguresTest, NoTrialsGiveAFigureSayingSo) {
  const std::string svg = AccuracyCostFigure(MadeSweep(), {}, v1::OBJECTIVE_TOP1,
                                             v1::OBJECTIVE_SIZE, PlotOptions{});
  EXPECT_NE(svg.find("no evaluated trials yet"), std::string::npos);
  RenderAndCheck(svg, "empty", 1000);
}

}  // namespace
}  // namespace bitsweep::cli
