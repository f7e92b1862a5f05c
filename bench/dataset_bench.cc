// Decode-once benchmark for image datasets: loads a dataset reference with the image pipeline
// (timing the load and reporting how many images it decoded), then optionally evaluates a model
// on it, and prints one JSON line. Run it twice on the same --cache_dir: the first run decodes,
// the second reads the on-disk cache. bench/dataset_bench.sh drives it; figures go to
// docs/BENCHMARKS.md.
//
//   dataset_bench --dataset imagefolder:/data/val --resize 256 --center_crop 224 --threads 2
//       --cache_dir /tmp/cache [--model m.onnx] [--max_resident_mb 2048]
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "worker/dataset_settings.h"
#include "worker/engine/data/pixel_store.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/onnx_import.h"

ABSL_FLAG(std::string, dataset, "", "dataset reference");
ABSL_FLAG(int64_t, resize, 0, "shorter side");
ABSL_FLAG(int64_t, center_crop, 0, "centre crop");
ABSL_FLAG(int32_t, threads, 2, "decoding and engine threads");
ABSL_FLAG(std::string, cache_dir, "", "on-disk dataset cache (empty: none)");
ABSL_FLAG(std::string, model, "", "also evaluate this model");
ABSL_FLAG(int64_t, max_resident_mb, 2048, "larger sets stream from the cache file");
ABSL_FLAG(int64_t, batch, 64, "evaluation batch");

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace bitsweep;
  engine::Preprocessing pre;
  pre.resize = absl::GetFlag(FLAGS_resize);
  pre.center_crop = absl::GetFlag(FLAGS_center_crop);
  pre.mean = {0.485f, 0.456f, 0.406f};
  pre.std = {0.229f, 0.224f, 0.225f};
  engine::LoadOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  options.max_resident_bytes = absl::GetFlag(FLAGS_max_resident_mb) << 20;
  std::optional<engine::Graph> graph;
  if (const std::string model = absl::GetFlag(FLAGS_model); !model.empty()) {
    absl::StatusOr<engine::Graph> g = engine::ImportOnnxFile(model);
    if (!g.ok()) {
      std::fprintf(stderr, "%s\n", g.status().ToString().c_str());
      return 1;
    }
    graph = *std::move(g);
    pre.channels = worker::ModelInputChannels(*graph);
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<engine::Dataset> ds =
      engine::LoadDataset(absl::GetFlag(FLAGS_dataset), pre, options);
  if (!ds.ok()) {
    std::fprintf(stderr, "%s\n", ds.status().ToString().c_str());
    return 1;
  }
  const double load_seconds = Seconds(start);
  double eval_seconds = 0, top1 = 0;
  if (graph) {
    const auto eval_start = std::chrono::steady_clock::now();
    absl::StatusOr<engine::EvalResult> r = engine::Evaluate(
        *graph, *ds, {.batch = absl::GetFlag(FLAGS_batch), .threads = absl::GetFlag(FLAGS_threads)});
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    eval_seconds = Seconds(eval_start);
    top1 = r->top1;
  }
  std::printf(
      "{\"images\": %lld, \"decoded\": %lld, \"load_seconds\": %.3f, \"load_images_per_s\": %.1f, "
      "\"streamed\": %s, \"eval_seconds\": %.3f, \"total_seconds\": %.3f, \"top1\": %.4f}\n",
      static_cast<long long>(ds->size()), static_cast<long long>(ds->decoded_images), load_seconds,
      ds->size() / load_seconds, ds->pixels != nullptr && !ds->pixels->resident() ? "true" : "false",
      eval_seconds, load_seconds + eval_seconds, top1);
  return 0;
}
