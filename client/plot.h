// The sweep's figures as standalone SVG documents, for `frontier --plot`, `figures` and `report`:
//
//   AccuracyCostFigure  top-1 (or top-5) against a cost (size, energy or BOPs): every evaluated
//                       trial drawn faint, the Pareto frontier as a staircase, the fp32 baseline
//                       line and the error-margin band under it, a legend, and the trial ids of
//                       the frontier points within the margin; axes with units (%, KiB, µJ,
//                       GBOPs) and an optional log scale for the cost.
//   LayerFormatsFigure  a heatmap of layers (rows, network order) × frontier configs (columns, by
//                       size): each cell's upper half the weight bits, lower half the activation
//                       bits, colored by width, with every format in the cell's tooltip.
//
// Elements carry classes tests and stylesheets can find: trial, frontier-point, in-margin,
// frontier-line, baseline, margin-band, point-label, legend, cell, below-axis.
//
//   std::string svg = AccuracyCostFigure(sweep, trials, v1::OBJECTIVE_TOP1, v1::OBJECTIVE_SIZE, {});
//   RETURN_IF_ERROR(WriteFigure("frontier.png", svg));  // .png through rsvg-convert
#ifndef BITSWEEP_CLIENT_PLOT_H_
#define BITSWEEP_CLIENT_PLOT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "bitsweep/v1/explorer.pb.h"

namespace bitsweep::cli {

struct PlotOptions {
  bool log_cost = false;  // logarithmic cost axis
};

// `trials`: the sweep's trials (any state; only succeeded ones are drawn). `accuracy` is
// OBJECTIVE_TOP1 or OBJECTIVE_TOP5, `cost` OBJECTIVE_SIZE, OBJECTIVE_ENERGY or OBJECTIVE_BOPS.
std::string AccuracyCostFigure(const v1::Sweep& sweep, const std::vector<v1::Trial>& trials,
                               v1::Objective accuracy, v1::Objective cost,
                               const PlotOptions& options);

// The per-layer formats of the top-1 / size frontier of `trials` (succeeded ones).
std::string LayerFormatsFigure(const v1::Sweep& sweep, const std::vector<v1::Trial>& trials);

// The top-1 / `cost` frontier of the succeeded trials, cheapest first (the staircase's order).
std::vector<v1::FrontierPoint> CostFrontier(const v1::Sweep& sweep,
                                            const std::vector<v1::Trial>& trials,
                                            v1::Objective accuracy, v1::Objective cost);

// Writes `svg` to `path`; a path ending in .png is rasterized by rsvg-convert (Debian's
// librsvg2-bin) at twice the SVG's size.
absl::Status WriteFigure(const std::string& path, const std::string& svg);

// Text escaped for XML and HTML (&, <, >, ").
std::string Escape(absl::string_view text);

// Text for people: "59.7 KiB", "1.23 µJ", "4.5 GBOPs", "90.20%".
std::string FormatValue(v1::Objective objective, double value);

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_PLOT_H_
