#include "common/log.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace bitsweep {
namespace {

char LevelLetter(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return 'I';
    case LogLevel::kWarning:
      return 'W';
    case LogLevel::kError:
      return 'E';
  }
  return '?';
}

}  // namespace

std::string FormatLogLine(absl::Time when, LogLevel level, absl::string_view component,
                          absl::string_view message) {
  return absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", when, absl::UTCTimeZone()), " ",
                      std::string(1, LevelLetter(level)), " ", component, ": ", message, "\n");
}

void Log(LogLevel level, absl::string_view component, absl::string_view message) {
  const std::string line = FormatLogLine(absl::Now(), level, component, message);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace bitsweep
