// The checks of what callers send that need no database: a worker's reported result, the limits
// of a sweep spec, list page tokens and sizes. Each returns INVALID_ARGUMENT naming the field and
// the value, so that nothing a caller must change is retried or stored.
//
//   RETURN_IF_ERROR(CheckSpecLimits(spec));
//   ASSIGN_OR_RETURN(int page_size, ResolvePageSize(request.page_size(), /*default_size=*/50));
#ifndef BITSWEEP_SERVER_COORDINATOR_REQUEST_CHECKS_H_
#define BITSWEEP_SERVER_COORDINATOR_REQUEST_CHECKS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bitsweep/v1/common.pb.h"
#include "bitsweep/v1/explorer.pb.h"

namespace bitsweep::server {

// What a worker may report: every number in range, the totals the sums of the layers' parts
// (the cost model adds them up layer by layer), layer names unique.
absl::Status CheckResult(const v1::TrialResult& r);

// Upper bounds and every check of a sweep spec that needs no data, so that a spec a worker
// would refuse (or spend days on) is refused at submit. (Budget and population are bounded by
// the strategies that use them: planner/plan_util.cc.)
absl::Status CheckSpecLimits(const v1::SweepSpec& spec);

// 0 for the first page; the id a previous page ended at otherwise.
absl::StatusOr<int64_t> ParsePageToken(absl::string_view token);

// `default_size` for 0, at most 1000, INVALID_ARGUMENT below 0.
absl::StatusOr<int> ResolvePageSize(int requested, int default_size);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_REQUEST_CHECKS_H_
