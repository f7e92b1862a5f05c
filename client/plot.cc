#include "client/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/frontier/frontier.h"

namespace bitsweep::cli {
namespace {

constexpr char kFont[] = "DejaVu Sans, Verdana, Arial, sans-serif";

// A display unit for an objective's raw values: value / divisor, named `unit`.
struct Unit {
  double divisor = 1;
  std::string unit;   // "KiB", "µJ", "GBOPs", "%"
  std::string label;  // the axis title
};

Unit UnitFor(v1::Objective o, double max_value) {
  switch (o) {
    case v1::OBJECTIVE_TOP1: return {0.01, "%", "top-1 accuracy (%)"};
    case v1::OBJECTIVE_TOP5: return {0.01, "%", "top-5 accuracy (%)"};
    case v1::OBJECTIVE_SIZE: {
      const double bytes = max_value / 8;
      if (bytes >= 1024.0 * 1024) return {8.0 * 1024 * 1024, "MiB", "weight size (MiB)"};
      if (bytes >= 1024.0) return {8.0 * 1024, "KiB", "weight size (KiB)"};
      return {8.0, "B", "weight size (bytes)"};
    }
    case v1::OBJECTIVE_ENERGY: {
      if (max_value >= 1e9) return {1e9, "mJ", "energy per inference (mJ)"};
      if (max_value >= 1e6) return {1e6, "µJ", "energy per inference (µJ)"};
      if (max_value >= 1e3) return {1e3, "nJ", "energy per inference (nJ)"};
      return {1, "pJ", "energy per inference (pJ)"};
    }
    case v1::OBJECTIVE_BOPS: {
      if (max_value >= 1e12) return {1e12, "TBOPs", "bit operations (TBOPs)"};
      if (max_value >= 1e9) return {1e9, "GBOPs", "bit operations (GBOPs)"};
      if (max_value >= 1e6) return {1e6, "MBOPs", "bit operations (MBOPs)"};
      return {1e3, "KBOPs", "bit operations (KBOPs)"};
    }
    default: return {1, "", ""};
  }
}

// "12.5", "0.031", "250": up to 3 significant digits, no exponent for the usual ranges.
std::string Number(double v) {
  if (v == 0) return "0";
  std::string s = absl::StrFormat("%.3g", v);
  if (absl::StrContains(s, "e")) s = absl::StrFormat("%.6g", v);
  return s;
}

// A tick's text with as many decimals as the step needs (90.75 with a 0.25 step, 90 with 2).
std::string TickLabel(double v, double step) {
  int decimals = 0;
  while (decimals < 6 && std::fabs(step * std::pow(10, decimals) -
                                    std::round(step * std::pow(10, decimals))) > 1e-6) {
    ++decimals;
  }
  return absl::StrFormat("%.*f", decimals, v);
}

double NiceStep(double range, int target) {
  const double raw = range / std::max(target, 1);
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10 * magnitude;
}

std::vector<double> LinearTicks(double lo, double hi, int target) {
  std::vector<double> ticks;
  const double step = NiceStep(hi - lo, target);
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

std::vector<double> LogTicks(double lo, double hi) {
  std::vector<double> ticks;
  for (const std::vector<double>& mantissas :
       {std::vector<double>{1, 2, 5}, std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
    ticks.clear();
    for (int e = static_cast<int>(std::floor(std::log10(lo))) - 1;
         e <= static_cast<int>(std::ceil(std::log10(hi))); ++e) {
      for (double m : mantissas) {
        const double t = m * std::pow(10, e);
        if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) ticks.push_back(t);
      }
    }
    if (ticks.size() >= 3) break;  // a narrow range gets every mantissa
  }
  return ticks;
}

struct Box {
  double x0, y0, x1, y1;
  bool Overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

double TextWidth(const std::string& text, double font_size) {
  return 0.6 * font_size * static_cast<double>(text.size());
}

std::string SvgOpen(double width, double height, const std::string& title) {
  return absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
      "font-family=\"%s\" font-size=\"12\">\n<title>%s</title>\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      width, height, width, height, kFont, Escape(title));
}

std::string SweepTitle(const v1::Sweep& sweep) {
  std::string title = absl::StrCat("sweep ", sweep.id());
  if (!sweep.spec().name().empty()) absl::StrAppend(&title, " \"", sweep.spec().name(), "\"");
  if (!sweep.spec().strategy().empty()) absl::StrAppend(&title, " (", sweep.spec().strategy(), ")");
  return title;
}

const char* CostName(v1::Objective cost) {
  switch (cost) {
    case v1::OBJECTIVE_SIZE: return "weight size";
    case v1::OBJECTIVE_ENERGY: return "energy";
    case v1::OBJECTIVE_BOPS: return "BOPs";
    default: return server::ObjectiveName(cost);
  }
}

}  // namespace

std::string Escape(absl::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string FormatValue(v1::Objective objective, double value) {
  const Unit unit = UnitFor(objective, value);
  if (objective == v1::OBJECTIVE_TOP1 || objective == v1::OBJECTIVE_TOP5) {
    return absl::StrFormat("%.2f%%", value * 100);
  }
  return absl::StrCat(Number(value / unit.divisor), " ", unit.unit);
}

std::vector<v1::FrontierPoint> CostFrontier(const v1::Sweep& sweep,
                                            const std::vector<v1::Trial>& trials,
                                            v1::Objective accuracy, v1::Objective cost) {
  std::optional<double> baseline;
  if (sweep.has_baseline_top1()) baseline = sweep.baseline_top1();
  const double margin = sweep.spec().has_error_margin() ? sweep.spec().error_margin() : 1.0;
  v1::Frontier f = server::BuildFrontier(sweep.id(), trials, {accuracy, cost}, baseline, margin);
  std::vector<v1::FrontierPoint> points(f.points().begin(), f.points().end());
  std::sort(points.begin(), points.end(), [](const v1::FrontierPoint& a, const v1::FrontierPoint& b) {
    return a.values(1) != b.values(1) ? a.values(1) < b.values(1) : a.values(0) < b.values(0);
  });
  return points;
}

std::string AccuracyCostFigure(const v1::Sweep& sweep, const std::vector<v1::Trial>& trials,
                               v1::Objective accuracy, v1::Objective cost,
                               const PlotOptions& options) {
  const double width = 780, height = 470;
  const double left = 72, right = 210, top = 44, bottom = 58;  // legend in the right margin
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  const std::string title = absl::StrCat(SweepTitle(sweep), ": ",
                                         accuracy == v1::OBJECTIVE_TOP5 ? "top-5" : "top-1",
                                         " vs ", CostName(cost));
  std::string svg = SvgOpen(width, height, title);
  absl::StrAppendFormat(&svg, "<text x=\"%g\" y=\"24\" font-size=\"15\" font-weight=\"bold\">%s</text>\n",
                        left, Escape(title));

  struct Point {
    double x, y;
    const v1::Trial* trial;
  };
  std::vector<Point> points;
  for (const v1::Trial& t : trials) {
    if (t.state() != v1::TRIAL_SUCCEEDED) continue;
    const double x = server::ObjectiveValue(t.result(), cost);
    if (options.log_cost && x <= 0) continue;
    points.push_back({x, server::ObjectiveValue(t.result(), accuracy), &t});
  }
  const std::vector<v1::FrontierPoint> frontier = CostFrontier(sweep, trials, accuracy, cost);
  if (points.empty()) {
    absl::StrAppendFormat(&svg, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\" fill=\"#555\">"
                          "no evaluated trials yet</text>\n</svg>\n", width / 2, height / 2);
    return svg;
  }
  const bool has_baseline = sweep.has_baseline_top1() && accuracy == v1::OBJECTIVE_TOP1;
  const double baseline = sweep.baseline_top1();
  const double margin = (sweep.spec().has_error_margin() ? sweep.spec().error_margin() : 1.0) / 100;

  // Cost range over every point; accuracy range focused on the interesting region: at most
  // max(10 points, 5 margins) under the baseline (or the best trial). Trials below it sit on
  // the bottom edge as small triangles.
  double xmin = points[0].x, xmax = points[0].x, ymin = points[0].y, ymax = points[0].y;
  for (const Point& p : points) {
    xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
  }
  const double top_value = has_baseline ? std::max(ymax, baseline) : ymax;
  double floor_value = top_value - std::max(0.10, 5 * margin);
  for (const v1::FrontierPoint& p : frontier) {
    if (p.within_margin()) floor_value = std::min(floor_value, p.values(0) - margin);
  }
  double ylo = std::max(ymin, floor_value), yhi = top_value;
  if (has_baseline) ylo = std::min(ylo, baseline - margin);
  // Padded, then snapped outwards to the tick step so the axis starts and ends on a tick.
  const double ypad = std::max((yhi - ylo) * 0.04, 0.002);
  ylo = std::max(0.0, ylo - ypad), yhi = std::min(1.0, yhi + ypad);
  if (yhi <= ylo) yhi = ylo + 0.01;
  const double ystep = NiceStep((yhi - ylo) * 100, 6) / 100;
  ylo = std::max(0.0, std::floor(ylo / ystep + 1e-9) * ystep);
  yhi = std::min(1.0, std::ceil(yhi / ystep - 1e-9) * ystep);
  const Unit xunit = UnitFor(cost, xmax);
  const Unit yunit = UnitFor(accuracy, 1);
  double xlo = xmin, xhi = xmax;
  if (options.log_cost) {
    xlo = xmin / 1.25, xhi = xmax * 1.25;
  } else {
    const double pad = std::max((xmax - xmin) * 0.05, xmax * 0.02 + 1e-12);
    xlo = std::max(0.0, xmin - pad), xhi = xmax + pad;
  }
  auto X = [&](double v) {
    if (options.log_cost) {
      return left + (std::log(v) - std::log(xlo)) / (std::log(xhi) - std::log(xlo)) * plot_w;
    }
    return left + (v - xlo) / (xhi - xlo) * plot_w;
  };
  auto Y = [&](double v) { return top + (yhi - v) / (yhi - ylo) * plot_h; };

  // Grid, ticks and axis titles.
  absl::StrAppend(&svg, "<g class=\"axes\" font-size=\"11\" fill=\"#333\">\n");
  const std::vector<double> xticks =
      options.log_cost ? LogTicks(xlo / xunit.divisor, xhi / xunit.divisor)
                       : LinearTicks(xlo / xunit.divisor, xhi / xunit.divisor, 7);
  const double xstep = options.log_cost || xticks.size() < 2 ? 0 : xticks[1] - xticks[0];
  for (double t : xticks) {
    const double x = X(t * xunit.divisor);
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#e6e6e6\"/>"
                          "<text class=\"xtick\" x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n",
                          x, top, x, top + plot_h, x, top + plot_h + 16,
                          options.log_cost ? Number(t) : TickLabel(t, xstep));
  }
  const std::vector<double> yticks = LinearTicks(ylo * 100, yhi * 100, 6);
  const double ytick_step = yticks.size() < 2 ? 1 : yticks[1] - yticks[0];
  for (double t : yticks) {
    const double y = Y(t / 100);
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>"
                          "<text class=\"ytick\" x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%s%%</text>\n",
                          left, y, left + plot_w, y, left - 6, y + 4, TickLabel(t, ytick_step));
  }
  absl::StrAppendFormat(
      &svg,
      "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#888\"/>\n"
      "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\" font-size=\"12\">%s%s</text>\n"
      "<text x=\"16\" y=\"%g\" transform=\"rotate(-90 16 %g)\" text-anchor=\"middle\" "
      "font-size=\"12\">%s</text>\n</g>\n",
      left, top, plot_w, plot_h, left + plot_w / 2, height - 16, Escape(xunit.label),
      options.log_cost ? ", log scale" : "", top + plot_h / 2, top + plot_h / 2,
      Escape(yunit.label));

  // The error-margin band and the baseline.
  if (has_baseline) {
    const double band_top = Y(std::min(baseline, yhi)), band_bottom = Y(std::max(baseline - margin, ylo));
    absl::StrAppendFormat(&svg,
                          "<rect class=\"margin-band\" x=\"%g\" y=\"%.1f\" width=\"%g\" height=\"%.1f\" "
                          "fill=\"#1a9850\" fill-opacity=\"0.10\"/>\n",
                          left, band_top, plot_w, std::max(0.0, band_bottom - band_top));
    absl::StrAppendFormat(&svg,
                          "<line class=\"baseline\" x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" "
                          "stroke=\"#333\" stroke-width=\"1.2\" stroke-dasharray=\"6 4\"/>\n",
                          left, Y(baseline), left + plot_w, Y(baseline));
  }

  // Every evaluated trial, faint; those under the axis as triangles on the bottom edge.
  int below = 0;
  absl::StrAppend(&svg, "<g class=\"trials\">\n");
  for (const Point& p : points) {
    const std::string tip = absl::StrCat("trial ", p.trial->id(), ": ", p.trial->spec().label(), "\n",
                                         FormatValue(accuracy, p.y), ", ", FormatValue(cost, p.x));
    if (p.y < ylo) {
      ++below;
      const double x = X(p.x), y = top + plot_h - 1;
      absl::StrAppendFormat(&svg,
                            "<path class=\"trial below-axis\" d=\"M%.1f %.1f l-4 -7 h8 z\" "
                            "fill=\"#9aa5b1\" fill-opacity=\"0.6\"><title>%s</title></path>\n",
                            x, y, Escape(tip));
      continue;
    }
    absl::StrAppendFormat(&svg,
                          "<circle class=\"trial\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#8c96a3\" "
                          "fill-opacity=\"0.45\"><title>%s</title></circle>\n",
                          X(p.x), Y(p.y), Escape(tip));
  }
  absl::StrAppend(&svg, "</g>\n");

  // The frontier staircase: from each point, flat to the next point's cost, then up to it; flat
  // after the last point to the right edge (more cost buys nothing more).
  std::string path;
  for (size_t i = 0; i < frontier.size(); ++i) {
    const double x = X(frontier[i].values(1)), y = Y(std::max(frontier[i].values(0), ylo));
    absl::StrAppend(&path, i == 0 ? absl::StrFormat("M%.1f %.1f", x, y)
                                  : absl::StrFormat(" H%.1f V%.1f", x, y));
  }
  if (!frontier.empty()) {
    absl::StrAppendFormat(&path, " H%g", left + plot_w);
    absl::StrAppendFormat(&svg,
                          "<path class=\"frontier-line\" d=\"%s\" fill=\"none\" stroke=\"#1f5fbf\" "
                          "stroke-width=\"2\"/>\n",
                          path);
  }
  // Frontier points, then the labels of those within the margin, placed where they overlap
  // neither another label nor a frontier point.
  std::vector<Box> taken;
  for (const v1::FrontierPoint& p : frontier) {
    const double x = X(p.values(1)), y = Y(std::max(p.values(0), ylo));
    taken.push_back({x - 5, y - 5, x + 5, y + 5});
    const std::string tip = absl::StrCat("trial ", p.trial_id(), ": ", p.spec().label(), "\n",
                                         FormatValue(accuracy, p.values(0)), ", ",
                                         FormatValue(cost, p.values(1)));
    const char* color = p.within_margin() ? "#1a9850" : "#d95f02";
    if (p.values(0) < ylo) {  // under the region shown: a triangle on the bottom edge
      absl::StrAppendFormat(
          &svg,
          "<path class=\"frontier-point below-axis\" data-cx=\"%.1f\" data-cy=\"%.1f\" "
          "d=\"M%.1f %.1f l-6 -10 h12 z\" fill=\"%s\" stroke=\"white\"><title>%s</title></path>\n",
          x, y, x, y - 1, color, Escape(tip));
      continue;
    }
    absl::StrAppendFormat(
        &svg,
        "<circle class=\"frontier-point%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\" "
        "stroke=\"white\" stroke-width=\"1.5\"><title>%s</title></circle>\n",
        p.within_margin() ? " in-margin" : "", x, y, color, Escape(tip));
  }
  for (const v1::FrontierPoint& p : frontier) {
    if (!p.within_margin()) continue;
    const std::string text = absl::StrCat("#", p.trial_id());
    const double x = X(p.values(1)), y = Y(p.values(0));
    const double w = TextWidth(text, 11), h = 12;
    const std::pair<double, double> offsets[] = {{-w - 7, -8}, {7, -8},      {7, 14},
                                                 {-w - 7, 14}, {-w / 2, -12}, {-w / 2, 22}};
    Box chosen{x + offsets[0].first, y + offsets[0].second - h + 2, 0, 0};
    for (const auto& [dx, dy] : offsets) {
      const Box b{x + dx, y + dy - h + 2, x + dx + w, y + dy + 2};
      const bool inside = b.x0 >= left && b.x1 <= left + plot_w && b.y0 >= top && b.y1 <= top + plot_h;
      bool free = inside;
      for (const Box& o : taken) free = free && !b.Overlaps(o);
      if (free) {
        chosen = b;
        break;
      }
    }
    chosen.x1 = chosen.x0 + w, chosen.y1 = chosen.y0 + h;
    taken.push_back(chosen);
    absl::StrAppendFormat(&svg,
                          "<text class=\"point-label\" x=\"%.1f\" y=\"%.1f\" font-size=\"11\" "
                          "fill=\"#145c2e\">%s</text>\n",
                          chosen.x0, chosen.y1 - 2, text);
  }

  // Legend, right of the plot.
  const double lx = left + plot_w + 18;
  double ly = top + 8;
  absl::StrAppend(&svg, "<g class=\"legend\" font-size=\"11\" fill=\"#222\">\n");
  auto entry = [&](const std::string& symbol, const std::string& text) {
    absl::StrAppendFormat(&svg, "%s<text x=\"%g\" y=\"%g\">%s</text>\n", symbol, lx + 24, ly + 4,
                          Escape(text));
    ly += 20;
  };
  entry(absl::StrFormat("<circle cx=\"%g\" cy=\"%g\" r=\"3.5\" fill=\"#8c96a3\" fill-opacity=\"0.45\"/>",
                        lx + 8, ly),
        absl::StrCat("evaluated trial (", points.size(), ")"));
  entry(absl::StrFormat("<path d=\"M%g %g h8 v-6 h8\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\"/>",
                        lx, ly + 3),
        "Pareto frontier");
  entry(absl::StrFormat("<circle cx=\"%g\" cy=\"%g\" r=\"5\" fill=\"#1a9850\"/>", lx + 8, ly),
        "frontier, within margin");
  entry(absl::StrFormat("<circle cx=\"%g\" cy=\"%g\" r=\"5\" fill=\"#d95f02\"/>", lx + 8, ly),
        "frontier, outside margin");
  if (has_baseline) {
    entry(absl::StrFormat("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#333\" "
                          "stroke-dasharray=\"6 4\"/>", lx, ly, lx + 16, ly),
          absl::StrCat("fp32 baseline ", FormatValue(accuracy, baseline)));
    entry(absl::StrFormat("<rect x=\"%g\" y=\"%g\" width=\"16\" height=\"10\" fill=\"#1a9850\" "
                          "fill-opacity=\"0.18\"/>", lx, ly - 5),
          absl::StrFormat("error margin %.2g pp", margin * 100));
  }
  if (below > 0) {
    entry(absl::StrFormat("<path d=\"M%g %g l-4 -7 h8 z\" fill=\"#9aa5b1\"/>", lx + 8, ly + 4),
          absl::StrCat(below, below == 1 ? " trial" : " trials", " below ", TickLabel(ylo * 100, ytick_step), "%"));
  }
  ly += 6;
  absl::StrAppendFormat(&svg, "<text x=\"%g\" y=\"%g\" fill=\"#555\">#N: the trial id of a</text>\n"
                        "<text x=\"%g\" y=\"%g\" fill=\"#555\">frontier point in the margin</text>\n",
                        lx, ly + 4, lx, ly + 18);
  absl::StrAppend(&svg, "</g>\n</svg>\n");
  return svg;
}

namespace {

// Fill and text colors for a width: warm for few bits, cool for many, grey for fp32.
std::pair<const char*, const char*> BitsColor(int bits) {
  if (bits <= 0) return {"#ffffff", "#999999"};
  if (bits <= 2) return {"#b2182b", "#ffffff"};
  if (bits <= 4) return {"#ef8a62", "#000000"};
  if (bits <= 6) return {"#fddbc7", "#000000"};
  if (bits <= 8) return {"#d1e5f0", "#000000"};
  if (bits <= 16) return {"#67a9cf", "#000000"};
  if (bits < 32) return {"#2166ac", "#ffffff"};
  return {"#e0e0e0", "#555555"};  // fp32
}

}  // namespace

std::string LayerFormatsFigure(const v1::Sweep& sweep, const std::vector<v1::Trial>& trials) {
  const std::vector<v1::FrontierPoint> frontier =
      CostFrontier(sweep, trials, v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE);
  // Layers in network order, from the first frontier point that has them.
  std::vector<std::pair<std::string, std::string>> layers;
  for (const v1::FrontierPoint& p : frontier) {
    if (p.result().layers_size() > static_cast<int>(layers.size())) {
      layers.clear();
      for (const v1::LayerResult& l : p.result().layers()) layers.emplace_back(l.name(), l.layer_class());
    }
  }
  const double cell_w = 58, cell_h = 34, header_h = 78, top = 40;
  size_t name_len = 8;
  for (const auto& [name, cls] : layers) name_len = std::max(name_len, name.size() + cls.size() + 3);
  const double left = std::min(260.0, 16 + TextWidth(std::string(name_len, 'x'), 11));
  const double legend_h = 82;
  const double width = std::max(560.0, left + cell_w * frontier.size() + 24);
  const double height = top + header_h + cell_h * layers.size() + legend_h + 10;
  const std::string title = absl::StrCat(SweepTitle(sweep), ": per-layer formats of the frontier");
  std::string svg = SvgOpen(width, height, title);
  absl::StrAppendFormat(&svg, "<text x=\"16\" y=\"24\" font-size=\"15\" font-weight=\"bold\">%s</text>\n",
                        Escape(title));
  if (frontier.empty() || layers.empty()) {
    absl::StrAppendFormat(&svg, "<text x=\"16\" y=\"%g\" fill=\"#555\">no frontier with per-layer "
                          "results yet</text>\n</svg>\n", top + 30);
    return svg;
  }
  // Column headers: trial id, top-1, size; in-margin columns marked green.
  for (size_t c = 0; c < frontier.size(); ++c) {
    const v1::FrontierPoint& p = frontier[c];
    const double x = left + c * cell_w + cell_w / 2;
    absl::StrAppendFormat(
        &svg,
        "<g class=\"column%s\" font-size=\"10.5\" text-anchor=\"middle\">"
        "<text x=\"%.1f\" y=\"%g\" font-weight=\"bold\" font-size=\"11.5\">#%d</text>"
        "<text x=\"%.1f\" y=\"%g\">%s</text><text x=\"%.1f\" y=\"%g\">%s</text>"
        "<rect x=\"%.1f\" y=\"%g\" width=\"%g\" height=\"5\" fill=\"%s\"/></g>\n",
        p.within_margin() ? " in-margin" : "", x, top + 20, p.trial_id(), x, top + 36,
        absl::StrFormat("%.1f%%", 100 * p.values(0)), x, top + 51,
        FormatValue(v1::OBJECTIVE_SIZE, p.values(1)), x - cell_w / 2 + 2, top + header_h - 14,
        cell_w - 4, p.within_margin() ? "#1a9850" : "#d95f02");
  }
  // Rows.
  const double y0 = top + header_h;
  for (size_t r = 0; r < layers.size(); ++r) {
    const double y = y0 + r * cell_h;
    absl::StrAppendFormat(&svg,
                          "<text class=\"layer\" x=\"%g\" y=\"%.1f\" text-anchor=\"end\" "
                          "font-size=\"11\">%s <tspan fill=\"#777\">(%s)</tspan></text>\n",
                          left - 8, y + cell_h / 2 + 4, Escape(layers[r].first),
                          Escape(layers[r].second));
    for (size_t c = 0; c < frontier.size(); ++c) {
      const v1::LayerResult* layer = nullptr;
      for (const v1::LayerResult& l : frontier[c].result().layers()) {
        if (l.name() == layers[r].first) layer = &l;
      }
      const double x = left + c * cell_w;
      if (layer == nullptr) continue;
      const int w = layer->weights().bits();
      const int in = layer->inputs().bits(), out = layer->outputs().bits();
      const auto [wfill, wtext] = BitsColor(w);
      const auto [afill, atext] = BitsColor(out);
      auto width = [](int bits) { return bits >= 32 || bits <= 0 ? std::string("fp32") : absl::StrCat(bits); };
      const std::string weights = absl::StrCat("w ", width(w));
      const std::string act = in != out && in > 0 ? absl::StrCat("a ", width(in), "/", width(out))
                                                  : absl::StrCat("a ", width(out));
      const std::string tip = absl::StrCat(
          layers[r].first, " in trial ", frontier[c].trial_id(), "\nweights ",
          layer->weights().description().empty() ? layer->weights().format() : layer->weights().description(),
          "\ninputs ", layer->inputs().description().empty() ? layer->inputs().format() : layer->inputs().description(),
          "\noutputs ", layer->outputs().description().empty() ? layer->outputs().format() : layer->outputs().description());
      absl::StrAppendFormat(
          &svg,
          "<g class=\"cell\"><title>%s</title>"
          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%g\" height=\"%g\" fill=\"%s\"/>"
          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%g\" height=\"%g\" fill=\"%s\"/>"
          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10.5\" fill=\"%s\">%s</text>"
          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10.5\" fill=\"%s\">%s</text>"
          "</g>\n",
          Escape(tip), x + 1, y + 1, cell_w - 2, cell_h / 2 - 1, wfill, x + 1, y + cell_h / 2,
          cell_w - 2, cell_h / 2 - 1, afill, x + cell_w / 2, y + cell_h / 2 - 4, wtext,
          Escape(weights), x + cell_w / 2, y + cell_h - 5, atext,
          Escape(act));
    }
  }
  // Legend: the width colors and how to read a cell.
  const double ly = y0 + layers.size() * cell_h + 22;
  absl::StrAppendFormat(&svg, "<g class=\"legend\" font-size=\"11\"><text x=\"16\" y=\"%g\">"
                        "bits:</text>\n", ly + 12);
  double lx = 52;
  for (const auto& [bits, text] : std::vector<std::pair<int, std::string>>{
           {2, "1-2"}, {4, "3-4"}, {6, "5-6"}, {8, "7-8"}, {16, "9-16"}, {24, "17-31"}, {32, "fp32"}}) {
    const auto [fill, ink] = BitsColor(bits);
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%g\" y=\"%g\" width=\"40\" height=\"16\" fill=\"%s\"/>"
                          "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\" fill=\"%s\">%s</text>\n",
                          lx, ly, fill, lx + 20, ly + 12, ink, text);
    lx += 44;
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"16\" y=\"%g\" fill=\"#444\">Each cell: weight bits above, "
                        "activation bits below (input/output when they differ).</text>\n"
                        "<text x=\"16\" y=\"%g\" fill=\"#444\">Columns: the top-1 / size "
                        "frontier by size; green bar: within the error margin.</text></g>\n</svg>\n",
                        ly + 36, ly + 52);
  return svg;
}

absl::Status WriteFigure(const std::string& path, const std::string& svg) {
  if (absl::EndsWith(path, ".png")) {
    std::string quoted;  // the path in single quotes for the shell
    for (char c : path) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    const std::string command =
        absl::StrCat("rsvg-convert --zoom 2 --format png --output '", quoted, "'");
    FILE* pipe = popen(command.c_str(), "w");
    if (pipe == nullptr) return absl::InternalError("cannot start rsvg-convert");
    std::fwrite(svg.data(), 1, svg.size(), pipe);
    const int status = pclose(pipe);
    if (status != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": rsvg-convert failed (PNG output needs Debian's librsvg2-bin; write .svg to "
                "skip it)"));
    }
    return absl::OkStatus();
  }
  FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) return absl::UnavailableError(absl::StrCat(path, ": cannot write"));
  const bool ok = std::fwrite(svg.data(), 1, svg.size(), file) == svg.size();
  if (std::fclose(file) != 0 || !ok) return absl::UnavailableError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

}  // namespace bitsweep::cli
