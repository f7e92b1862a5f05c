// One log line format for every bitsweep process (coordinator, worker, CLI in local mode):
//
//   2026-12-03T13:01:02.123Z W worker host-a-17: report failed: UNAVAILABLE: connection refused
//
// UTC timestamp with milliseconds, a one-letter level (I, W, E), the component, the message. Each
// line is written to stderr with one fwrite, so lines of threads and processes sharing the stream
// do not interleave. Abseil 20220623 has no absl/log; this is the project's.
//
//   Log(LogLevel::kInfo, "worker w1", "registered");
//   Log(LogLevel::kWarning, "coordinator", absl::StrCat("Report failed: ", status.ToString()));
#ifndef BITSWEEP_COMMON_LOG_H_
#define BITSWEEP_COMMON_LOG_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace bitsweep {

enum class LogLevel { kInfo, kWarning, kError };

// The line Log writes (with its trailing newline), at time `when`.
std::string FormatLogLine(absl::Time when, LogLevel level, absl::string_view component,
                          absl::string_view message);

// Writes FormatLogLine(now, ...) to stderr.
void Log(LogLevel level, absl::string_view component, absl::string_view message);

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_LOG_H_
