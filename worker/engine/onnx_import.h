// ONNX import: ModelProto -> Graph, through libonnx's checker and shape inference.
//
// Supports opsets up to 17 of the default domain and the operators SupportedOnnxOperators() lists.
// Before anything else, every node whose inputs are all constant (initializers, Constant, bound
// inputs, the shapes of values whose shape is static) is evaluated once and replaced by its
// values (constant_folding.h); nodes and constants no output depends on are dropped. Anything
// else -- an unknown operator, an attribute the engine does not implement, a training-mode flag,
// a non-float data input -- is an error naming the node, the operator and the attribute, never a
// silently wrong graph; every unsupported node of a model is listed in one error.
//
//   ASSIGN_OR_RETURN(Graph g, ImportOnnxFile("model.onnx"));
//   // `bitsweep run` binds test inputs (which may be weights) before compiling:
//   ImportOptions opts;
//   opts.bound_inputs["W"] = weights;
//   ASSIGN_OR_RETURN(Graph g2, ImportOnnxFile("model.onnx", opts));
#ifndef BITSWEEP_WORKER_ENGINE_ONNX_IMPORT_H_
#define BITSWEEP_WORKER_ENGINE_ONNX_IMPORT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/graph.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

// Older opsets are accepted where an operator's attributes still mean the same; operators whose
// old versions differ (consumed_inputs, Reshape's shape attribute, ...) are rejected by name.
inline constexpr int64_t kMinOpset = 1;
inline constexpr int64_t kMaxOpset = 17;

struct ImportOptions {
  // Graph inputs given values before compilation: they become constants (and stop being runtime
  // inputs). ONNX's node tests feed weights this way.
  std::map<std::string, Tensor> bound_inputs;
  // The batch a dynamic leading input dimension is bound to while shape computations fold. The
  // compiled network still takes any batch: a Reshape target that copied the import batch
  // copies the batch in use.
  int64_t batch = 1;
};

// The ONNX operators the importer accepts (default domain). The one list: `bitsweep help ops`
// prints it (SupportedOperatorsHelp), the conformance suite selects ONNX's node tests by it.
const std::vector<std::string>& SupportedOnnxOperators();
// For people: the supported operators, the operators folded when their inputs are constant, the
// opsets and data types.
std::string SupportedOperatorsHelp();

absl::StatusOr<onnx::ModelProto> ReadOnnxModel(const std::string& path);
// ImportOnnxModel takes the model as it is; ImportOnnxFile reads the file itself, the raw data of
// large float/int64 initializers straight into the graph's Tensors (the weights exist once while
// loading; no ModelProto holds them).
absl::StatusOr<Graph> ImportOnnxModel(const onnx::ModelProto& model,
                                      const ImportOptions& options = {},
                                      const std::string& source = "<memory>");
absl::StatusOr<Graph> ImportOnnxFile(const std::string& path, const ImportOptions& options = {});

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_ONNX_IMPORT_H_
