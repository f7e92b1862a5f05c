// fp32 evaluation throughput over Fashion-MNIST's 10,000 test images: the denominator of every
// later overhead ratio (quantized / fp32); quantized emulation; and the true int8 path
// (worker/engine/int8/) against fp32 and emulated int:8 in the same run.
//
//   build/bench/eval_throughput_bench [--benchmark_filter=lenet5]
//   OMP_WAIT_POLICY=PASSIVE build/bench/eval_throughput_bench --benchmark_filter=Int8
//   OMP_WAIT_POLICY=PASSIVE build/bench/eval_throughput_bench --benchmark_filter=EvalQuantized
//       --benchmark_repetitions=3 --benchmark_report_aggregates_only=true   (docs/BENCHMARKS.md)
//
// Each iteration evaluates the whole test split with Evaluate() (compilation included in the
// wall time, excluded from the images_per_s counter, which is what `bitsweep eval` reports).
#include <time.h>

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/int8/int8_evaluate.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

const Dataset& TestSplit() {
  static const Dataset* data = [] {
    absl::StatusOr<Dataset> d = LoadDataset(
        absl::StrCat("idx:", BITSWEEP_FASHION_MNIST_DIR, "/t10k"), {{0.2860f}, {0.3530f}, 0});
    if (!d.ok()) {
      std::fprintf(stderr, "%s\n", std::string(d.status().message()).c_str());
      std::exit(1);
    }
    return new Dataset(*std::move(d));
  }();
  return *data;
}

const Graph& ZooGraph(const std::string& arch) {
  static std::map<std::string, Graph>* graphs = new std::map<std::string, Graph>;
  auto it = graphs->find(arch);
  if (it == graphs->end()) {
    absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(arch, {});
    absl::StatusOr<Graph> graph =
        model.ok() ? ImportOnnxModel(*model, {}, arch) : absl::StatusOr<Graph>(model.status());
    if (!graph.ok()) {
      std::fprintf(stderr, "%s\n", std::string(graph.status().message()).c_str());
      std::exit(1);
    }
    it = graphs->emplace(arch, *std::move(graph)).first;
  }
  return it->second;
}

// The first 1000 training images: what the quantized benchmarks calibrate on.
const Dataset& CalibrationSplit() {
  static const Dataset* calibration = [] {
    absl::StatusOr<Dataset> d = LoadDataset(
        absl::StrCat("idx:", BITSWEEP_FASHION_MNIST_DIR, "/train"), {{0.2860f}, {0.3530f}, 1000});
    if (!d.ok()) std::exit(1);
    return new Dataset(*std::move(d));
  }();
  return *calibration;
}

// Sets `in` up for a trial of the config `json` (parsed into `config`, which must outlive `in`) on
// `arch` against the test split, calibrated on CalibrationSplit() through one cache for every
// benchmark: calibration is not what is measured. False, with the benchmark skipped, when the
// config does not parse.
bool SetUpQuantizedTrial(benchmark::State& state, const std::string& arch,
                         const std::string& json, quant::QuantConfig* config, TrialInputs* in) {
  absl::StatusOr<quant::QuantConfig> parsed = quant::ParseQuantConfig(json);
  if (!parsed.ok()) {
    state.SkipWithError(std::string(parsed.status().message()).c_str());
    return false;
  }
  *config = *std::move(parsed);
  static CalibrationCache* cache = new CalibrationCache;
  in->graph = &ZooGraph(arch);
  in->eval = &TestSplit();
  in->calibration = &CalibrationSplit();
  in->config = config;
  in->calibration_cache = cache;
  in->model_key = arch;
  in->calibration_key = "fashion-mnist/train:1000";
  return true;
}

// CPU time of the whole process (every thread), in seconds.
double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// The batch under test, on the two cores every figure is measured with.
EvalOptions BenchOptions(const benchmark::State& state) {
  EvalOptions options;
  options.batch = state.range(0);
  options.threads = 2;
  return options;
}

void BM_EvalFp32(benchmark::State& state, const std::string& arch) {
  const Graph& graph = ZooGraph(arch);
  const Dataset& data = TestSplit();
  const EvalOptions options = BenchOptions(state);
  double images = 0, seconds = 0;
  for (auto _ : state) {
    absl::StatusOr<EvalResult> r = Evaluate(graph, data, options);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    images += r->samples;
    seconds += r->seconds;
    state.SetIterationTime(r->seconds);
  }
  state.counters["images_per_s"] = images / seconds;
}

// Quantized emulation of `config` (calibrated on the first 1000 training images), same run as
// the fp32 figures above so that ratios are meaningful.
void BM_EvalQuantized(benchmark::State& state, const std::string& arch, const std::string& config) {
  const Graph& graph = ZooGraph(arch);
  const Dataset& data = TestSplit();
  quant::QuantConfig parsed;
  TrialInputs in;
  if (!SetUpQuantizedTrial(state, arch, config, &parsed, &in)) return;
  const EvalOptions options = BenchOptions(state);
  // Quantized and fp32 evaluations alternate within each iteration, so machine noise hits both
  // alike and `ratio` (quantized images/s over fp32 images/s) is measured in one run.
  // cpu_ratio: the same ratio in CPU time of the whole process over each call (compilation
  // included), which other load on a shared machine disturbs less than wall time.
  double quant_seconds = 0, fp32_seconds = 0, images = 0, quant_cpu = 0, fp32_cpu = 0;
  for (auto _ : state) {
    const double cpu0 = ProcessCpuSeconds();
    absl::StatusOr<TrialResult> r = RunTrial(in, options);
    const double cpu1 = ProcessCpuSeconds();
    absl::StatusOr<EvalResult> fp32 = Evaluate(graph, data, options);
    quant_cpu += cpu1 - cpu0;
    fp32_cpu += ProcessCpuSeconds() - cpu1;
    if (!r.ok() || !fp32.ok()) {
      state.SkipWithError(std::string((r.ok() ? fp32.status() : r.status()).message()).c_str());
      return;
    }
    images += r->eval.samples;
    quant_seconds += r->eval.seconds;
    fp32_seconds += fp32->seconds;
    state.SetIterationTime(r->eval.seconds);
  }
  state.counters["images_per_s"] = images / quant_seconds;
  state.counters["fp32_images_per_s"] = images / fp32_seconds;
  state.counters["ratio"] = fp32_seconds / quant_seconds;
  state.counters["cpu_ratio"] = fp32_cpu / quant_cpu;
}

// True int8 (oneDNN int8 primitives) for `config`, with the fp32 network and the emulation of
// the same plan evaluated back to back in each iteration, so both ratios come from one run.
void BM_EvalInt8(benchmark::State& state, const std::string& arch, const std::string& config) {
  const Graph& graph = ZooGraph(arch);
  const Dataset& data = TestSplit();
  quant::QuantConfig parsed;
  TrialInputs in;
  if (!SetUpQuantizedTrial(state, arch, config, &parsed, &in)) return;
  const EvalOptions options = BenchOptions(state);
  double int8_seconds = 0, emulated_seconds = 0, fp32_seconds = 0, images = 0;
  double top1_int8 = 0, top1_emulated = 0;
  for (auto _ : state) {
    absl::StatusOr<TrialResult> emulated = RunTrial(in, options);  // plan + emulated eval
    if (!emulated.ok()) {
      state.SkipWithError(std::string(emulated.status().message()).c_str());
      return;
    }
    EvalOptions int8_options = options;
    int8_options.quant = &emulated->plan;
    absl::StatusOr<EvalResult> int8 = int8::EvaluateInt8(graph, data, int8_options);
    absl::StatusOr<EvalResult> fp32 = Evaluate(graph, data, options);
    if (!int8.ok() || !fp32.ok()) {
      const absl::Status failed = int8.ok() ? fp32.status() : int8.status();
      state.SkipWithError(std::string(failed.message()).c_str());
      return;
    }
    images += int8->samples;
    int8_seconds += int8->seconds;
    emulated_seconds += emulated->eval.seconds;
    fp32_seconds += fp32->seconds;
    top1_int8 = int8->top1;
    top1_emulated = emulated->eval.top1;
    state.SetIterationTime(int8->seconds);
  }
  state.counters["images_per_s"] = images / int8_seconds;
  state.counters["fp32_images_per_s"] = images / fp32_seconds;
  state.counters["emulated_images_per_s"] = images / emulated_seconds;
  state.counters["ratio_vs_fp32"] = fp32_seconds / int8_seconds;
  state.counters["ratio_vs_emulated"] = emulated_seconds / int8_seconds;
  // Random-weight zoo graphs: the top-1 values only show that both paths agree.
  state.counters["top1_delta"] = top1_int8 - top1_emulated;
}

constexpr char kFixed8[] =
    R"({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}})";
constexpr char kMinifloat43[] =
    R"({"default": {"weights": "minifloat:4:3", "inputs": "minifloat:4:3", "outputs": "minifloat:4:3"}})";
constexpr char kInt8[] =
    R"({"default": {"weights": "int:8", "inputs": "int:8", "outputs": "int:8"}})";
constexpr char kInt8Asym[] =
    R"({"default": {"weights": "int:8:asym", "inputs": "int:8:asym", "outputs": "int:8:asym"}})";
constexpr char kInt8PerChannel[] =
    R"({"default": {"weights": "int:8:sym:channel", "inputs": "int:8", "outputs": "int:8"}})";

BENCHMARK_CAPTURE(BM_EvalFp32, lenet5, std::string("lenet5"))
    ->Arg(64)->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_EvalFp32, squeezenet_mini, std::string("squeezenet-mini"))
    ->Arg(64)->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_EvalFp32, resnet_mini, std::string("resnet-mini"))
    ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_EvalFp32, alexnet_mini, std::string("alexnet-mini"))
    ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

// Every format family with weights, inputs and outputs quantized, on the three zoo models the
// emulation target names (issue 15: each at >= 0.9x fp32).
#define BITSWEEP_QUANTIZED_BENCHMARKS(name, arch)                                             \
  BENCHMARK_CAPTURE(BM_EvalQuantized, name##_fixed8, std::string(arch), std::string(kFixed8)) \
      ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(4.0);               \
  BENCHMARK_CAPTURE(BM_EvalQuantized, name##_int8, std::string(arch), std::string(kInt8))     \
      ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(4.0);               \
  BENCHMARK_CAPTURE(BM_EvalQuantized, name##_int8_asym, std::string(arch),                     \
                    std::string(kInt8Asym))                                                    \
      ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(4.0);               \
  BENCHMARK_CAPTURE(BM_EvalQuantized, name##_minifloat43, std::string(arch),                   \
                    std::string(kMinifloat43))                                                 \
      ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(4.0)

BITSWEEP_QUANTIZED_BENCHMARKS(lenet5, "lenet5");
BITSWEEP_QUANTIZED_BENCHMARKS(squeezenet_mini, "squeezenet-mini");
BITSWEEP_QUANTIZED_BENCHMARKS(resnet_mini, "resnet-mini");

BENCHMARK_CAPTURE(BM_EvalInt8, lenet5_int8, std::string("lenet5"), std::string(kInt8))
    ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(4.0);
BENCHMARK_CAPTURE(BM_EvalInt8, lenet5_int8_channel, std::string("lenet5"),
                  std::string(kInt8PerChannel))
    ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(4.0);
BENCHMARK_CAPTURE(BM_EvalInt8, squeezenet_mini_int8, std::string("squeezenet-mini"),
                  std::string(kInt8))
    ->Arg(256)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(4.0);

}  // namespace
}  // namespace bitsweep::engine

BENCHMARK_MAIN();
