// `bitsweep figures` and `bitsweep report`: a sweep's figures as files, and one self-contained
// HTML page (inline SVG, no scripts, no network) with its settings, figures, frontier table and
// the per-layer formats of the frontier points within the error margin.
//
// Both read the sweep and all its trials from a coordinator (--server); ReportHtml is the pure
// part that tests can call on made-up sweeps.
#ifndef BITSWEEP_CLIENT_REPORT_H_
#define BITSWEEP_CLIENT_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bitsweep/v1/explorer.pb.h"
#include "client/plot.h"

namespace bitsweep::cli {

// bitsweep figures --sweep ID --output-dir DIR [--log-scale] [--png]: writes
// top1_vs_size.svg, top1_vs_energy.svg, top1_vs_bops.svg and layer_formats.svg (and .png).
absl::Status FiguresCommand();

// bitsweep report --sweep ID --out report.html [--log-scale]
absl::Status ReportCommand();

// The report page for a sweep and its trials.
std::string ReportHtml(const v1::Sweep& sweep, const std::vector<v1::Trial>& trials,
                       const PlotOptions& options);

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_REPORT_H_
