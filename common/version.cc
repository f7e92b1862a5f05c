#include "common/version.h"

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/common.h"
#include "version_info.h"  // generated: BITSWEEP_VERSION, BITSWEEP_GIT_COMMIT

namespace bitsweep {

const char* ProjectVersion() { return BITSWEEP_VERSION; }
const char* GitCommit() { return BITSWEEP_GIT_COMMIT; }

std::string VersionText(const std::string& program,
                        const std::vector<std::pair<std::string, std::string>>& libraries) {
  std::string text = absl::StrCat(program, " ", ProjectVersion(), " (commit ", GitCommit(), ")\n");
  for (const auto& [name, version] : libraries) absl::StrAppend(&text, name, " ", version, "\n");
  absl::StrAppend(&text, "protobuf ",
                  google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION), "\n");
  absl::StrAppend(&text, "Abseil ", ABSL_LTS_RELEASE_VERSION, "\n");
  return text;
}

}  // namespace bitsweep
