// The `bitsweep` command line: the command registry, argv parsing with the conventions people
// expect, per-command help, and the exit codes.
//
// Conventions:
//   - global flags (--server, --token, --tls-ca) may come before or after the command, and every
//     flag takes `-` or `_` (--error-margin = --error_margin), `--flag value` or `--flag=value`;
//   - BITSWEEP_SERVER and BITSWEEP_TOKEN give --server and --token when the flags are absent;
//   - `bitsweep COMMAND --help` (or -h, or `bitsweep help COMMAND`) prints that command's usage and
//     its flags with their defaults and exits 0; `bitsweep --version` prints versions, exits 0;
//   - exit codes: 0 success, 1 failure (the server said no, a file is missing, a sweep failed or
//     was cancelled), 2 usage (unknown command or flag, malformed value, missing required flag,
//     an option the command does not support). A command reports a usage error by returning
//     UsageError(...).
//
// To add a command, append a CommandSpec to the registry in main.cc; to add a flag to a command,
// define it with ABSL_FLAG anywhere in the client and list its name in the command's `flags`
// (that is what `--help` shows; flags are looked up in absl's registry by name).
#ifndef BITSWEEP_CLIENT_COMMAND_LINE_H_
#define BITSWEEP_CLIENT_COMMAND_LINE_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitsweep::cli {

inline constexpr int kExitSuccess = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// An InvalidArgument status marked as a usage error: main exits 2 and points at --help.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// What a command receives besides the absl flags: the values of its repeatable flags.
struct Invocation {
  std::string command;
  std::map<std::string, std::vector<std::string>> repeated;  // flag name -> values in order
};

struct CommandSpec {
  std::string name;
  std::string synopsis;  // the arguments, e.g. "--sweep ID [--format table|csv|json]"
  std::string summary;   // what it does, for people; may span lines
  // Flag names (underscores) the command reads, shown by --help in this order.
  std::vector<std::string> flags;
  // Flags that may be given more than once; collected into Invocation::repeated.
  std::vector<std::string> repeated_flags;
  // The --format values it prints; giving any other (or --format at all, when empty) is a usage
  // error. The first one is the default.
  std::vector<std::string> formats;
  std::function<absl::Status(const Invocation&)> run;
};

// Flags every service command takes, before or after the command.
const std::vector<std::string>& GlobalFlags();

// argv (without the program name) as parsed. Flags are already set in absl's registry.
struct ParsedCommandLine {
  std::string command;  // empty: none given
  bool help = false;
  bool version = false;
  std::vector<std::string> given_flags;  // names as canonical absl names, in order
  Invocation invocation;
};

// Applies BITSWEEP_SERVER / BITSWEEP_TOKEN, then the arguments. Errors are usage errors.
absl::StatusOr<ParsedCommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                                   const std::vector<CommandSpec>& commands);

// Checks what depends on the command: the --format value against CommandSpec::formats.
absl::Status CheckForCommand(const ParsedCommandLine& parsed, const CommandSpec& command);

// "usage: bitsweep NAME SYNOPSIS", the summary, and every flag with its help and default.
std::string CommandHelp(const CommandSpec& command);

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_COMMAND_LINE_H_
