// `--model zoo:NAME`: our zoo baselines as models for a sweep, trained once with the recipe in
// models/README.md and cached, so a newcomer's first command needs no model file.
//
//   ASSIGN_OR_RETURN(std::string path, ResolveModel("zoo:lenet5", train_split, prep, 2));
//
// The cache lives in $BITSWEEP_CACHE_DIR, else $XDG_CACHE_HOME/bitsweep, else ~/.cache/bitsweep;
// a cached model is reused when its architecture, recipe, training split and preprocessing match.
#ifndef BITSWEEP_CLIENT_ZOO_MODELS_H_
#define BITSWEEP_CLIENT_ZOO_MODELS_H_

#include <string>

#include "absl/status/statusor.h"
#include "bitsweep/v1/common.pb.h"

namespace bitsweep::cli {

// A path as is; `zoo:NAME` is trained on dataset.train (with its mean/std) unless cached, and
// the cached file's path returned. Progress goes to stderr.
absl::StatusOr<std::string> ResolveModel(const std::string& model, const v1::DatasetRef& dataset,
                                         int threads);

// worker::DefaultCacheDir(sub), created if missing.
absl::StatusOr<std::string> CacheDir(const std::string& sub);

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_ZOO_MODELS_H_
