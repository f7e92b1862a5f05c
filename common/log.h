// Timestamped, levelled lines on stderr for the long-running processes (coordinator, worker):
// lifecycle events and every failing call, for `docker logs`, journald and people.
//
//   bitsweep::Log(bitsweep::LogLevel::kWarning, "coordinator",
//                 absl::StrCat("/bitsweep.v1.Explorer/SubmitSweep failed: ", status.ToString()));
//   // 2026-12-03T13:01:02.123Z W coordinator: /bitsweep.v1.Explorer/SubmitSweep failed: ...
//
// One write per line, so lines of concurrent threads never interleave.
#ifndef BITSWEEP_COMMON_LOG_H_
#define BITSWEEP_COMMON_LOG_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace bitsweep {

enum class LogLevel { kInfo, kWarning, kError };

// "TIME L COMPONENT: MESSAGE" with TIME in UTC (milliseconds) and L one of I, W, E.
std::string FormatLogLine(absl::Time time, LogLevel level, absl::string_view component,
                          absl::string_view message);

// Writes FormatLogLine(absl::Now(), ...) and a newline to stderr.
void Log(LogLevel level, absl::string_view component, absl::string_view message);

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_LOG_H_
