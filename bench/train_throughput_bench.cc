// Training throughput (forward + backward + SGD step, fp32) on Fashion-MNIST training images, at
// batch 64 with 2 OpenMP threads: what `bitsweep train` and fine-tuning trials cost per image.
//
//   build/bench/train_throughput_bench [--benchmark_filter=lenet5]
//
// Each iteration runs Train() for 40 optimizer steps on the first 10,000 training images. The
// images_per_s counter is the trainer's own figure (EpochReport::images_per_second: training
// steps only, network compilation excluded); the manual time is the same interval.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "worker/engine/dataset.h"
#include "worker/engine/train/trainer.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

const Dataset& TrainSplit() {
  static const Dataset* data = [] {
    absl::StatusOr<Dataset> d = LoadDataset(
        absl::StrCat("idx:", BITSWEEP_FASHION_MNIST_DIR, "/train"), {{0.2860f}, {0.3530f}, 10000});
    if (!d.ok()) {
      std::fprintf(stderr, "%s\n", std::string(d.status().message()).c_str());
      std::exit(1);
    }
    return new Dataset(*std::move(d));
  }();
  return *data;
}

void BM_TrainFp32(benchmark::State& state, const std::string& arch) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(arch, {});
  if (!model.ok()) {
    state.SkipWithError(std::string(model.status().message()).c_str());
    return;
  }
  const Dataset& data = TrainSplit();
  TrainOptions options;
  options.batch = state.range(0);
  options.threads = 2;
  options.max_steps = 40;
  options.learning_rate = 0.01;
  double images = 0, seconds = 0;
  for (auto _ : state) {
    EpochReport last;
    options.on_epoch = [&](const EpochReport& r) { last = r; };
    absl::StatusOr<onnx::ModelProto> trained = Train(*model, data, options);
    if (!trained.ok()) {
      state.SkipWithError(std::string(trained.status().message()).c_str());
      return;
    }
    const double n = static_cast<double>(last.steps * options.batch);
    const double s = last.images_per_second > 0 ? n / last.images_per_second : 0;
    images += n;
    seconds += s;
    state.SetIterationTime(s);
  }
  state.counters["images_per_s"] = seconds > 0 ? images / seconds : 0;
}

BENCHMARK_CAPTURE(BM_TrainFp32, lenet5, std::string("lenet5"))
    ->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_TrainFp32, squeezenet_mini, std::string("squeezenet-mini"))
    ->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_TrainFp32, resnet_mini, std::string("resnet-mini"))
    ->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_TrainFp32, alexnet_mini, std::string("alexnet-mini"))
    ->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace
}  // namespace bitsweep::engine

BENCHMARK_MAIN();
