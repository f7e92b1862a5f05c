#include "client/zoo_models.h"
#include "client/command_line.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/dataset_settings.h"
#include "worker/engine/dataset.h"
#include "worker/engine/train/trainer.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::cli {
namespace {

// The recipes that produced the committed models (models/README.md); the others' best known.
struct Recipe {
  const char* arch;
  int epochs;
  double lr, lr_decay, weight_decay;
};
constexpr Recipe kRecipes[] = {
    {"lenet5", 20, 0.01, 0.85, 0.001},
    {"squeezenet-mini", 40, 0.02, 0.9, 5e-4},
    {"alexnet-mini", 15, 0.01, 0.85, 5e-4},
    {"resnet-mini", 25, 0.05, 0.88, 5e-4},
};

}  // namespace

absl::StatusOr<std::string> CacheDir(const std::string& sub) {
  const std::string dir = worker::DefaultCacheDir(sub);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::UnavailableError(absl::StrCat(dir, ": ", error.message()));
  return dir;
}

absl::StatusOr<std::string> ResolveModel(const std::string& model, const v1::DatasetRef& dataset,
                                         int threads) {
  if (!absl::StartsWith(model, "zoo:")) return model;
  const std::string arch = model.substr(4);
  const Recipe* recipe = nullptr;
  for (const Recipe& r : kRecipes) {
    if (arch == r.arch) recipe = &r;
  }
  if (recipe == nullptr) {
    std::vector<std::string> names;
    for (const Recipe& r : kRecipes) names.push_back(r.arch);
    return UsageError(absl::StrCat("--model ", model, ": unknown zoo model (",
                                                   absl::StrJoin(names, ", "), ")"));
  }
  if (dataset.train().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--model ", model,
                                                   " trains on the training split: give one"));
  }
  const std::string key = absl::StrCat(
      arch, "|", recipe->epochs, "|", recipe->lr, "|", recipe->lr_decay, "|",
      recipe->weight_decay, "|", dataset.train(), "|", absl::StrJoin(dataset.mean(), ","), "|",
      absl::StrJoin(dataset.std(), ","));
  ASSIGN_OR_RETURN(std::string dir, CacheDir("zoo"));
  const std::string path =
      absl::StrFormat("%s/%s-%016x.onnx", dir, arch, std::hash<std::string>()(key));
  if (std::filesystem::exists(path)) {
    std::fprintf(stderr, "using cached %s (%s)\n", model.c_str(), path.c_str());
    return path;
  }

  engine::Preprocessing prep;
  prep.mean.assign(dataset.mean().begin(), dataset.mean().end());
  prep.std.assign(dataset.std().begin(), dataset.std().end());
  ASSIGN_OR_RETURN(engine::Dataset train, engine::LoadDataset(dataset.train(), prep));
  const engine::Shape sample = train.sample_shape();
  if (sample.size() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(model, " needs image samples [C,H,W]; ",
                                                   dataset.train(), " has ",
                                                   engine::ShapeToString(sample)));
  }
  engine::zoo::ArchOptions arch_options;
  arch_options.channels = sample[0];
  arch_options.height = sample[1];
  arch_options.width = sample[2];
  arch_options.num_classes = std::max(train.num_classes, 2);
  ASSIGN_OR_RETURN(onnx::ModelProto initial, engine::zoo::BuildArchitecture(arch, arch_options));
  engine::TrainOptions options;
  options.epochs = recipe->epochs;
  options.learning_rate = recipe->lr;
  options.lr_decay = recipe->lr_decay;
  options.weight_decay = recipe->weight_decay;
  options.threads = threads;
  options.on_epoch = [recipe, &model](const engine::EpochReport& r) {
    std::fprintf(stderr, "training %s: epoch %d/%d  loss %.4f  train_top1 %.4f  %.0f images/s\n",
                 model.c_str(), r.epoch, recipe->epochs, r.mean_loss, r.train_top1,
                 r.images_per_second);
  };
  std::fprintf(stderr, "training %s once on %s (%d epochs; cached afterwards)\n", model.c_str(),
               dataset.train().c_str(), recipe->epochs);
  ASSIGN_OR_RETURN(onnx::ModelProto trained, engine::Train(initial, train, options));
  const std::string temporary = path + ".tmp";
  RETURN_IF_ERROR(engine::SaveModel(trained, temporary));
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) return absl::UnavailableError(absl::StrCat(path, ": ", error.message()));
  return path;
}

}  // namespace bitsweep::cli
