// quant_logits: the class scores of a quantized emulation, one row per image, for comparison with
// an independent implementation (tests/real_models/fakequant_torch.py).
//
// Runs the same trial as `bitsweep eval --config` (formats, calibration, plan: RunTrialWith) and,
// with the plan the trial built, the emulated network over every evaluation image; writes the
// scores [N, classes] as an ONNX TensorProto and prints each layer's calibrated formats:
//
//   quant_logits MODEL.onnx CONFIG.json npy:CAL_X.npy,CAL_Y.npy npy:X.npy,Y.npy OUT.pb [BATCH]
//
// stdout: one line "LAYER weights|inputs|outputs FORMAT" per quantized role, then "top1 F".
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/dataset.h"
#include "worker/engine/eval_backend.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/trial.h"

namespace bitsweep::engine {
namespace {

// The scores of every image of `data` through the network compiled with `plan`, in batches of
// `batch` (the last one zero-padded; padded rows dropped).
absl::StatusOr<Tensor> Scores(const Graph& graph, const Dataset& data,
                              const quant::QuantPlan& plan, int64_t batch) {
  batch = std::min<int64_t>(batch, data.size());
  NetworkOptions options;
  Shape shape = data.images.shape();
  shape[0] = batch;
  options.input_shapes[graph.inputs[0].name] = shape;
  options.quant = &plan;
  ASSIGN_OR_RETURN(std::unique_ptr<Network> net, Network::Create(graph, options));
  const Shape out_shape = net->outputs()[0].shape;
  if (out_shape.size() != 2 || out_shape[0] != batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected scores [batch, classes], got ", ShapeToString(out_shape)));
  }
  const int64_t classes = out_shape[1];
  const int64_t sample = NumElements(data.sample_shape());
  std::vector<float> in(batch * sample), out(batch * classes), all(data.size() * classes);
  for (int64_t first = 0; first < data.size(); first += batch) {
    const int64_t count = std::min(batch, data.size() - first);
    std::fill(in.begin(), in.end(), 0.0f);
    std::memcpy(in.data(), data.images.floats().data() + first * sample,
                count * sample * sizeof(float));
    RETURN_IF_ERROR(net->RunSingle(in.data(), out.data()));
    std::memcpy(all.data() + first * classes, out.data(), count * classes * sizeof(float));
  }
  return Tensor::Float({data.size(), classes}, std::move(all));
}

absl::Status Main(int argc, char** argv) {
  if (argc < 6 || argc > 7) {
    return absl::InvalidArgumentError(
        "usage: quant_logits MODEL.onnx CONFIG.json CAL_REF EVAL_REF OUT.pb [BATCH]");
  }
  const int64_t batch = argc == 7 ? std::atoll(argv[6]) : 32;
  if (batch < 1) return absl::InvalidArgumentError("BATCH must be >= 1");
  ASSIGN_OR_RETURN(const Graph graph, ImportOnnxFile(argv[1]));
  ASSIGN_OR_RETURN(const quant::QuantConfig config, quant::ReadQuantConfigFile(argv[2]));
  ASSIGN_OR_RETURN(const Dataset calibration, LoadDataset(argv[3]));
  ASSIGN_OR_RETURN(const Dataset eval, LoadDataset(argv[4]));
  absl::StatusOr<Tensor> scores = absl::UnknownError("not evaluated");
  TrialBackend backend;
  backend.evaluate = [&](const Graph& g, const Dataset& d, const EvalOptions& o) {
    scores = Scores(g, d, *o.quant, batch);
    return Evaluate(g, d, o);
  };
  TrialInputs inputs{.graph = &graph, .eval = &eval, .calibration = &calibration,
                     .config = &config};
  ASSIGN_OR_RETURN(const TrialResult trial,
                   RunTrialWith(inputs, {.batch = batch, .threads = 0}, backend));
  RETURN_IF_ERROR(scores.status());
  RETURN_IF_ERROR(WriteTensorProtoFile(argv[5], "scores", *scores));
  for (const quant::LayerInfo& layer : trial.layers) {
    const quant::LayerQuantPlan& p = trial.plan.at(layer.name);
    const auto it = trial.eval.weight_quantizers.find(layer.name);
    const std::string weights = it == trial.eval.weight_quantizers.end()
                                    ? quant::FormatToString(p.weights)
                                    : DescribeQuantizer(it->second);
    std::printf("%s weights %s\n%s inputs %s\n%s outputs %s\n", layer.name.c_str(),
                weights.c_str(), layer.name.c_str(), DescribeQuantizer(p.inputs).c_str(),
                layer.name.c_str(), DescribeQuantizer(p.outputs).c_str());
  }
  std::printf("top1 %.17g\n", trial.eval.top1);
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitsweep::engine

int main(int argc, char** argv) {
  const absl::Status status = bitsweep::engine::Main(argc, argv);
  if (!status.ok()) {
    std::fprintf(stderr, "quant_logits: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
