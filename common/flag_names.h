// People write --output-dir; absl flag names are C++ identifiers (--output_dir). Every binary
// accepts both by rewriting dashes in flag names (not in values) before absl parses argv.
//
//   std::vector<std::string> storage;
//   std::vector<char*> args(argv, argv + argc);
//   NormalizeFlagNames(&storage, &args);
//   absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
#ifndef BITSWEEP_COMMON_FLAG_NAMES_H_
#define BITSWEEP_COMMON_FLAG_NAMES_H_

#include <algorithm>
#include <string>
#include <vector>

namespace bitsweep {

// `storage` keeps the rewritten strings alive; `args` then points into it.
inline void NormalizeFlagNames(std::vector<std::string>* storage, std::vector<char*>* args) {
  storage->clear();
  storage->reserve(args->size());
  for (char* arg : *args) {
    std::string a = arg;
    if (a.rfind("--", 0) == 0) {
      const size_t end = std::min(a.find('='), a.size());
      for (size_t i = 2; i < end; ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    storage->push_back(std::move(a));
  }
  for (size_t i = 0; i < args->size(); ++i) (*args)[i] = (*storage)[i].data();
}

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_FLAG_NAMES_H_
