// Runs a command line the way a user's shell would and collects what it printed, for the tests
// that drive our binaries as processes.
//
//   CommandResult r = RunCommandLine("build/client/bitsweep eval --model m.onnx ...");
//   EXPECT_EQ(r.exit_code, 0) << r.out;
#ifndef BITSWEEP_TESTS_CLI_RUN_BINARY_H_
#define BITSWEEP_TESTS_CLI_RUN_BINARY_H_

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace bitsweep::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

inline CommandResult RunCommandLine(const std::string& command_line) {
  CommandResult r;
  const std::string command = command_line + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) r.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_CLI_RUN_BINARY_H_
