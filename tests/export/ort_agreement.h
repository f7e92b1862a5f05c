// One QDQ export checked in ONNX Runtime against our own execution of the same trial, shared by
// the zoo test (tests/export/ort_agreement_test.cc) and the torchvision one
// (tests/real_models/ort_qdq_torchvision_test.cc):
//
//   1. a worker's TrialExecutor runs the int:8 trial (what the service stores and exports);
//   2. server::BuildQdqModel exports it (the ONNX checker runs on every export);
//   3. our execution of the same trial on the comparison images: the true int8 path
//      (`bitsweep eval --int8`) for symmetric configs, the emulation (`bitsweep eval --config`)
//      for asymmetric ones, which the int8 path refuses; its scales must be the reported ones;
//   4. ONNX Runtime (npm onnxruntime-node through tests/export/ort/ort_run.js) runs the export at
//      each optimization level of `bounds`; logits and top-1 are compared with ours and checked
//      against that level's bound (GoogleTest expectations), and one line per level is printed.
//
//   OrtAgreementCase c{.model_path = "m.onnx", .config_json = ..., .settings = settings, ...};
//   CheckOrtAgreement(c, {{"disabled", 1, 2, 2}, {"all", 3, 8, 6}});
#ifndef BITSWEEP_TESTS_EXPORT_ORT_AGREEMENT_H_
#define BITSWEEP_TESTS_EXPORT_ORT_AGREEMENT_H_

#include <filesystem>
#include <string>
#include <vector>

#include "bitsweep/v1/common.pb.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/trial_executor.h"

namespace bitsweep::testing {

// What ONNX Runtime may differ from us by, at one graph optimization level.
struct OrtBound {
  const char* optimization;  // ort_run.js --optimization: disabled, basic, extended, all
  double output_steps;       // max |ours - ORT| in steps of the last layer's output scale
  int argmax_differs;        // images whose predicted class differs
  int top1_difference;       // |correct(ours) - correct(ORT)|, in images
};

struct OrtAgreementCase {
  std::string model_path;    // the fp32 ONNX model
  std::string model_key;     // cache key of the model (the trial executor's hash)
  std::string config_json;   // an int:8 config; symmetric activations run our int8 path
  bool int8_path = true;     // false: compare with the emulation
  v1::EvalSettings settings;  // the trial's dataset: calibration split and a small evaluation
  // Ours: calibration and the trial's evaluation images, equal to what `settings` loads (the
  // trial rebuilt here must see the same data); `calibration_key` names it in `cache`.
  const engine::Dataset* calibration = nullptr;
  const engine::Dataset* trial_eval = nullptr;
  std::string calibration_key;
  engine::CalibrationCache* cache = nullptr;
  // The comparison images and labels, and the same images as a TensorProto file for ORT.
  const engine::Dataset* eval = nullptr;
  std::string eval_tensor_path;
  std::string input_name;     // the model's input
  std::filesystem::path work_dir;  // the export and ORT's outputs go here
  std::string tag;            // file names and printed lines
  worker::TrialExecutor* executor = nullptr;
  int threads = 2;
};

void CheckOrtAgreement(const OrtAgreementCase& c, const std::vector<OrtBound>& bounds);

// A Fashion-MNIST-shaped ([N, 1, 28, 28], input "input", output "output") two-layer perceptron
// of bias-free Linears as PyTorch exports them: Flatten -> MatMul(x, Transpose(fc1.weight
// [64, 784])) -> Relu -> MatMul(h, Identity(Transpose(fc2.weight [10, 64]))). Seeded weights
// (uniform, +-1/sqrt(fan in) scaled by 3). For the QDQ export of MatMul weights that reach
// the layer through Transpose / Identity nodes (qdq_test.cc, ort_agreement_test.cc).
onnx::ModelProto BiasFreeLinearMlp();

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_EXPORT_ORT_AGREEMENT_H_
