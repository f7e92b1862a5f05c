#include "client/command_line.h"

#include <algorithm>
#include <cstdlib>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace bitsweep::cli {
namespace {

constexpr char kUsagePayload[] = "bitsweep.dev/usage";

// --error_margin -> --error-margin, the spelling people type.
std::string Dashed(absl::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c == '_') c = '-';
  }
  return out;
}

std::string Underscored(absl::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c == '-') c = '_';
  }
  return out;
}

// Breaks `text` into lines of at most `width` characters (words longer than that stay whole).
std::vector<std::string> Wrap(absl::string_view text, size_t width) {
  std::vector<std::string> lines(1);
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!lines.back().empty() && lines.back().size() + 1 + word.size() > width) {
      lines.emplace_back();
    }
    if (!lines.back().empty()) lines.back() += ' ';
    absl::StrAppend(&lines.back(), word);
  }
  return lines;
}

std::string FlagLines(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;  // a flag another part of the client no longer defines
    std::string help = flag->Help();
    const std::string def = flag->DefaultValue();
    if (!def.empty() && def != "0" && def != "false") absl::StrAppend(&help, " [default: ", def, "]");
    if (name == "server") absl::StrAppend(&help, " [env BITSWEEP_SERVER]");
    if (name == "token") absl::StrAppend(&help, " [env BITSWEEP_TOKEN]");
    const std::string label = absl::StrCat("--", Dashed(name));
    const std::vector<std::string> lines = Wrap(help, 54);
    if (label.size() <= 22) {
      absl::StrAppendFormat(&out, "  %-22s %s\n", label, lines[0]);
    } else {
      absl::StrAppendFormat(&out, "  %s\n  %-22s %s\n", label, "", lines[0]);
    }
    for (size_t i = 1; i < lines.size(); ++i) absl::StrAppendFormat(&out, "  %-22s %s\n", "", lines[i]);
  }
  return out;
}

bool Contains(const std::vector<std::string>& list, absl::string_view item) {
  for (const std::string& s : list) {
    if (s == item) return true;
  }
  return false;
}

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

const std::vector<std::string>& GlobalFlags() {
  static const auto* flags = new std::vector<std::string>{"server", "token", "token_file", "tls_ca"};
  return *flags;
}

absl::StatusOr<ParsedCommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                                   const std::vector<CommandSpec>& commands) {
  ParsedCommandLine parsed;
  // The environment first, so flags on the command line win. (BITSWEEP_TOKEN is read where the
  // token is resolved, after --token and --token-file: ResolveToken in common/file_util.h.)
  for (const auto& [env, name] : {std::pair<const char*, const char*>{"BITSWEEP_SERVER", "server"}}) {
    const char* value = std::getenv(env);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    if (value != nullptr && *value != '\0' && flag != nullptr && !flag->ParseFrom(value, &error)) {
      return UsageError(absl::StrCat(env, "=", value, ": ", error));
    }
  }
  // Repeatable flags of whichever command is named (found in a first pass).
  std::vector<std::string> repeatable;
  for (const std::string& a : args) {
    for (const CommandSpec& c : commands) {
      if (c.name == a) repeatable = c.repeated_flags;
    }
    if (!repeatable.empty()) break;
  }

  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      if (parsed.command.empty()) {
        parsed.command = arg;
        continue;
      }
      // Two-word commands (`trials invalidate`): the second word joins the first when a
      // command of that name exists.
      if (const std::string joined = absl::StrCat(parsed.command, " ", arg);
          parsed.invocation.command.empty() &&
          std::any_of(commands.begin(), commands.end(),
                      [&](const CommandSpec& c) { return c.name == joined; })) {
        parsed.command = joined;
        continue;
      }
      if (parsed.command == "help" && parsed.invocation.command.empty()) {
        parsed.invocation.command = arg;  // `bitsweep help COMMAND`
        continue;
      }
      return UsageError(absl::StrCat("unexpected argument '", arg, "' (flags start with --)"));
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    absl::string_view body = absl::StripPrefix(absl::StripPrefix(arg, "-"), "-");
    std::string name = Underscored(body.substr(0, body.find('=')));
    const bool has_value = body.find('=') != absl::string_view::npos;
    std::string value = has_value ? std::string(body.substr(body.find('=') + 1)) : "";
    if (name == "help" || name == "h") {
      parsed.help = true;
      continue;
    }
    if (name == "version") {
      parsed.version = true;
      continue;
    }
    if (Contains(repeatable, name)) {
      if (!has_value) {
        if (i + 1 >= args.size()) return UsageError(absl::StrCat("--", Dashed(name), " needs a value"));
        value = args[++i];
      }
      parsed.invocation.repeated[name].push_back(value);
      parsed.given_flags.push_back(name);
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") && !has_value) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
        value = "false";
      }
    } else if (flag != nullptr && flag->IsOfType<bool>() && !has_value) {
      value = "true";
    } else if (flag != nullptr && !has_value) {
      if (i + 1 >= args.size()) return UsageError(absl::StrCat("--", Dashed(name), " needs a value"));
      value = args[++i];
    }
    if (flag == nullptr) {
      return UsageError(absl::StrCat("unknown flag --", Dashed(name)));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return UsageError(absl::StrCat("--", Dashed(name), " ", value, ": ", error));
    }
    parsed.given_flags.push_back(name);
  }
  if (parsed.command != "help") parsed.invocation.command = parsed.command;
  return parsed;
}

absl::Status CheckForCommand(const ParsedCommandLine& parsed, const CommandSpec& command) {
  // A flag another command reads would be silently ignored here (e.g. `train --model M.onnx`
  // trains --arch from scratch): refuse it, naming the command.
  for (const std::string& name : parsed.given_flags) {
    if (name != "format" && !Contains(command.flags, name) &&
        !Contains(command.repeated_flags, name)) {
      return UsageError(absl::StrCat("--", Dashed(name), " is not one of this command's flags"));
    }
  }
  if (!Contains(parsed.given_flags, "format")) return absl::OkStatus();
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag("format");
  const std::string format = flag == nullptr ? "" : flag->CurrentValue();
  if (command.formats.empty()) {
    return UsageError(absl::StrCat("--format: ", command.name, " has no output formats"));
  }
  if (!Contains(command.formats, format)) {
    return UsageError(absl::StrCat("--format ", format, ": ", command.name, " prints ",
                                   absl::StrJoin(command.formats, ", ")));
  }
  return absl::OkStatus();
}

std::string CommandHelp(const CommandSpec& command) {
  std::string out = absl::StrCat("usage: bitsweep ", command.name, " ", command.synopsis, "\n\n",
                                 command.summary, "\n");
  std::vector<std::string> own, global;
  for (const std::string& f : command.flags) {
    (Contains(GlobalFlags(), f) ? global : own).push_back(f);
  }
  if (!own.empty()) absl::StrAppend(&out, "\nFlags:\n", FlagLines(own));
  if (!global.empty()) {
    absl::StrAppend(&out, "\nGlobal flags (before or after the command):\n", FlagLines(global));
  }
  absl::StrAppend(&out, "\nExit status: 0 success, 1 failure, 2 usage error.\n");
  return out;
}

}  // namespace bitsweep::cli
