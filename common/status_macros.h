// Early-return helpers for absl::Status / absl::StatusOr.
//
// Abseil 20220623 (Debian 12) ships no ASSIGN_OR_RETURN, so bitsweep defines its two macros here,
// once, for every component:
//
//   RETURN_IF_ERROR(DoThing());
//   ASSIGN_OR_RETURN(Graph graph, ImportOnnx(path));
#ifndef BITSWEEP_COMMON_STATUS_MACROS_H_
#define BITSWEEP_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BITSWEEP_CONCAT_INNER_(a, b) a##b
#define BITSWEEP_CONCAT_(a, b) BITSWEEP_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                           \
  do {                                                  \
    const ::absl::Status bitsweep_status_ = (expr);     \
    if (!bitsweep_status_.ok()) return bitsweep_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  BITSWEEP_ASSIGN_OR_RETURN_IMPL_(BITSWEEP_CONCAT_(bitsweep_statusor_, __LINE__), lhs, expr)

#define BITSWEEP_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()

namespace bitsweep {

// Returns `status` with `context` prepended to its message, keeping its code.
inline absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(status.message()));
}

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_STATUS_MACROS_H_
