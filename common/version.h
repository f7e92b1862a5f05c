// The text every bitsweep binary prints for --version: the project version, the git commit it
// was built from, and the versions of the libraries the binary links (each binary names its own:
// the coordinator links no oneDNN, so it reports none).
//
//   std::string text = bitsweep::VersionText("bitsweep-coordinator",
//                                            {{"gRPC", grpc::Version()},
//                                             {"SQLite", sqlite3_libversion()}});
//   // bitsweep-coordinator 0.1.0 (commit 7a0a773abc12)
//   // gRPC 1.51.1
//   // ...
#ifndef BITSWEEP_COMMON_VERSION_H_
#define BITSWEEP_COMMON_VERSION_H_

#include <string>
#include <utility>
#include <vector>

namespace bitsweep {

// The project version (CMake's PROJECT_VERSION), e.g. "0.1.0".
const char* ProjectVersion();
// `git describe --always --dirty` of the source tree at build time; "unknown" without git.
const char* GitCommit();

// "PROGRAM VERSION (commit C)\n", one "NAME VERSION\n" line per library given, then the ones
// every binary links (protobuf, Abseil).
std::string VersionText(const std::string& program,
                        const std::vector<std::pair<std::string, std::string>>& libraries);

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_VERSION_H_
