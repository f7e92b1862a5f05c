// Fuzzes ONNX import: bytes -> ModelProto -> libonnx checker and shape inference -> constant
// folding -> our importer -> BatchNorm folding and activation fusion, as `bitsweep eval` and the
// worker load a model. Properties: import either fails with a message or yields a graph in
// topological order whose every value is defined before it is read.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/stubs/logging.h"
#include "onnx/onnx_pb.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/engine/graph.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/onnx_import.h"

namespace bitsweep::engine {
namespace {

void CheckDefinedBeforeUse(const Graph& graph) {
  std::set<std::string> defined;
  for (const ValueInfo& input : graph.inputs) defined.insert(input.name);
  for (const auto& [name, tensor] : graph.constants) {
    const size_t stored = tensor.dtype() == DataType::kFloat ? tensor.floats().size()
                                                             : tensor.int64s().size();
    FUZZ_CHECK(static_cast<int64_t>(stored) == tensor.num_elements());
    defined.insert(name);
  }
  for (const Node& node : graph.nodes) {
    for (const std::string& input : node.inputs) {
      FUZZ_CHECK(input.empty() || defined.count(input) > 0);
    }
    for (const std::string& output : node.outputs) defined.insert(output);
  }
  for (const std::string& output : graph.outputs) FUZZ_CHECK(defined.count(output) > 0);
}

}  // namespace
}  // namespace bitsweep::engine

// Protobuf logs every string field with invalid UTF-8 it parses: not a finding, only noise.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitsweep::engine;
  onnx::ModelProto model;
  if (!model.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<Graph> graph = ImportOnnxModel(model, {}, "fuzz.onnx");
  if (!graph.ok()) {
    FUZZ_CHECK(!graph.status().message().empty());
    return 0;
  }
  CheckDefinedBeforeUse(*graph);
  FoldBatchNorm(&*graph);
  FuseActivations(&*graph);
  CheckDefinedBeforeUse(*graph);
  return 0;
}
