// Values of list-valued flags, shared by the engine and the service commands:
// "--mean 0.2860" or "--mean 0.485,0.456,0.406", "--weight-formats fixed:8, fixed:4".
#ifndef BITSWEEP_CLIENT_FLAG_VALUES_H_
#define BITSWEEP_CLIENT_FLAG_VALUES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/command_line.h"

namespace bitsweep::cli {

// Comma-separated numbers; empty text gives none. Errors name the flag and the item.
inline absl::StatusOr<std::vector<float>> ParseFloatList(const std::string& flag,
                                                          const std::string& text) {
  std::vector<float> values;
  if (text.empty()) return values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    float v;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(part), &v)) {
      return UsageError(
          absl::StrCat("--", flag, ": '", std::string(part), "' is not a number"));
    }
    values.push_back(v);
  }
  return values;
}

// Comma-separated items, whitespace around them dropped, empty items skipped.
inline std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> items;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    items.emplace_back(absl::StripAsciiWhitespace(part));
  }
  return items;
}

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_FLAG_VALUES_H_
