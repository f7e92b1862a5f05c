#include "common/log.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace bitsweep {

std::string FormatLogLine(absl::Time time, LogLevel level, absl::string_view component,
                          absl::string_view message) {
  const char* letter = level == LogLevel::kInfo ? "I" : level == LogLevel::kWarning ? "W" : "E";
  return absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone()), " ",
                      letter, " ", component, ": ", message);
}

void Log(LogLevel level, absl::string_view component, absl::string_view message) {
  const std::string line = FormatLogLine(absl::Now(), level, component, message) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace bitsweep
