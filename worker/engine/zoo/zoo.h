// Model zoo: small CNN architectures, built in code as ONNX models with random weights.
//
// Tests, benchmarks and (later) training use these instead of downloaded model files. Each model
// has one graph input "input" of shape [N, C, H, W] (dim_param "N") and one output "logits" of
// shape [N, num_classes], uses opset 13, has stable readable node names (conv1, relu1, pool1, fc1,
// fire2_squeeze, block1_bn1, ...) and He-normal weights drawn from std::mt19937_64 seeded with
// ArchOptions::seed, so the same options always give byte-identical models. Every model passes
// onnx::checker::check_model.
//
//   ASSIGN_OR_RETURN(onnx::ModelProto model, zoo::BuildArchitecture("lenet5", {}));
//   for (const std::string& name : zoo::ArchitectureNames()) { ... }
//
// Architectures (all take any input size that keeps every spatial size >= 1):
//   lenet5          Conv6@5x5p2-Relu-MaxPool2-Conv16@5x5-Relu-MaxPool2-FC120-Relu-FC84-Relu-FC
//   squeezenet-mini Conv32@3x3-Relu-MaxPool2-Fire(16,32,32)x2-MaxPool2-Fire(24,48,48)-Dropout-
//                   Conv1x1(num_classes)-Relu-GlobalAveragePool-Flatten
//   resnet-mini     Conv16@3x3-BN-Relu, basic block 16->16, basic block 16->32 stride 2 with a
//                   1x1 conv+BN projection, GlobalAveragePool-Flatten-FC (BN params perturbed by
//                   the seed so BN-folding is observable)
//   alexnet-mini    Conv32@5x5p2-Relu-LRN-MaxPool3s2-Conv64@3x3p1-Relu-LRN-MaxPool3s2-
//                   Conv64@3x3p1-Relu-FC256-Relu-Dropout-FC
#ifndef BITSWEEP_WORKER_ENGINE_ZOO_ZOO_H_
#define BITSWEEP_WORKER_ENGINE_ZOO_ZOO_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"

namespace bitsweep::engine::zoo {

struct ArchOptions {
  int64_t channels = 1;
  int64_t height = 28;
  int64_t width = 28;
  int num_classes = 10;
  uint64_t seed = 1;
};

// {"lenet5", "squeezenet-mini", "resnet-mini", "alexnet-mini"}.
std::vector<std::string> ArchitectureNames();

// Builds the named architecture. InvalidArgument for an unknown name (the message lists the known
// names) or for options that leave no valid shape (non-positive sizes, spatial size shrinking to
// zero); Internal if the built model fails the ONNX checker.
absl::StatusOr<onnx::ModelProto> BuildArchitecture(std::string_view name,
                                                   const ArchOptions& options);

}  // namespace bitsweep::engine::zoo

#endif  // BITSWEEP_WORKER_ENGINE_ZOO_ZOO_H_
