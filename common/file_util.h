// Whole small files (certificates, sweep specs, profiles, models to upload) into a string, with
// an error that names the file; bearer tokens from flags, files or the environment.
#ifndef BITSWEEP_COMMON_FILE_UTIL_H_
#define BITSWEEP_COMMON_FILE_UTIL_H_

#include <cstdlib>
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

// A secret (bearer token) from a file such as a Docker secret: the first line, without trailing
// whitespace. An empty secret is an error.
inline absl::StatusOr<std::string> ReadSecretFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  std::string secret = text->substr(0, text->find('\n'));
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ' || secret.back() == '\t')) {
    secret.pop_back();
  }
  if (secret.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": the secret is empty"));
  return secret;
}

// A bearer token from, in this order: a flag's value, a file named by another flag
// (ReadSecretFile), or an environment variable. Flags show in `ps`, so files and the environment
// are the ways to keep a token out of sight. Empty: no token.
inline absl::StatusOr<std::string> ResolveToken(const std::string& value, const std::string& file,
                                                const char* env_name) {
  if (!value.empty()) return value;
  if (!file.empty()) return ReadSecretFile(file);
  const char* env = std::getenv(env_name);
  return std::string(env == nullptr ? "" : env);
}

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_FILE_UTIL_H_
