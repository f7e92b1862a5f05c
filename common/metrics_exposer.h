// The /metrics endpoint both servers offer (bitsweep-coordinator, bitsweep-worker): a
// prometheus-cpp Exposer on 0.0.0.0:PORT serving one registry. Header-only; users link
// prometheus-cpp::pull.
//
//   auto registry = std::make_shared<prometheus::Registry>();
//   ASSIGN_OR_RETURN(auto exposer, ServeMetrics(9100, registry));   // keep it alive
#ifndef BITSWEEP_COMMON_METRICS_EXPOSER_H_
#define BITSWEEP_COMMON_METRICS_EXPOSER_H_

#include <exception>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace bitsweep {

inline absl::StatusOr<std::unique_ptr<prometheus::Exposer>> ServeMetrics(
    int port, const std::shared_ptr<prometheus::Registry>& registry) {
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", port, " is not in 1..65535"));
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {  // civetweb reports a port in use by throwing
    exposer = std::make_unique<prometheus::Exposer>(absl::StrCat("0.0.0.0:", port));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on port ", port, ": ", e.what()));
  }
  exposer->RegisterCollectable(registry);
  return exposer;
}

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_METRICS_EXPOSER_H_
