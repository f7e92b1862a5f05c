// Whole small files (certificates, sweep specs, profiles, models to upload) into a string, with
// an error that names the file.
#ifndef BITSWEEP_COMMON_FILE_UTIL_H_
#define BITSWEEP_COMMON_FILE_UTIL_H_

#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace bitsweep {

inline absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": cannot read"));
  return text.str();
}

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_FILE_UTIL_H_
