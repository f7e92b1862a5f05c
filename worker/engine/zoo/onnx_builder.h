// OnnxGraphBuilder: a small helper for building onnx::ModelProto graphs in code; model file I/O.
//
// The model zoo, tests and benchmarks construct ONNX models programmatically rather than shipping
// binary files. The builder hides the protobuf boilerplate: typed graph inputs/outputs with a
// symbolic batch dimension, float/int64 initializers, nodes with attributes. It does no validation;
// run onnx::checker::check_model on the result (the zoo does).
//
//   OnnxGraphBuilder b;                                   // opset 13, ir_version 8
//   b.AddInput("x", {kBatchDim, 3, 8, 8});                // shape [N,3,8,8], dim_param "N"
//   b.AddInitializer("w", Tensor::Float({4, 3, 3, 3}, weights));
//   b.AddNode("Conv", "conv1", {"x", "w"}, {"y"},
//             {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1})});
//   b.AddOutput("y");                                     // float, shape left unspecified
//   onnx::ModelProto model = b.Build();
//   RETURN_IF_ERROR(SaveModel(model, "/tmp/conv.onnx"));
#ifndef BITSWEEP_WORKER_ENGINE_ZOO_ONNX_BUILDER_H_
#define BITSWEEP_WORKER_ENGINE_ZOO_ONNX_BUILDER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

// A dimension value in AddInput/AddOutput shapes that becomes the symbolic batch dimension
// (dim_param "N") instead of a fixed dim_value.
inline constexpr int64_t kBatchDim = -1;

// Attribute factories for OnnxGraphBuilder::AddNode.
onnx::AttributeProto IntAttr(const std::string& name, int64_t value);
onnx::AttributeProto FloatAttr(const std::string& name, float value);
onnx::AttributeProto IntsAttr(const std::string& name, const std::vector<int64_t>& values);
onnx::AttributeProto FloatsAttr(const std::string& name, const std::vector<float>& values);
onnx::AttributeProto StringAttr(const std::string& name, const std::string& value);
// A TENSOR attribute (e.g. Constant's "value").
onnx::AttributeProto TensorAttr(const std::string& name, const Tensor& value);

class OnnxGraphBuilder {
 public:
  explicit OnnxGraphBuilder(std::string graph_name = "bitsweep", int64_t opset = 13);

  // Default-domain opset version written to opset_import (default 13).
  void SetOpset(int64_t opset) { opset_ = opset; }
  int64_t opset() const { return opset_; }

  // Adds a graph input. Entries of `dims` equal to kBatchDim become dim_param "N"; the others are
  // fixed dim_values. `elem_type` is an onnx::TensorProto::DataType (FLOAT by default).
  void AddInput(const std::string& name, const Shape& dims,
                int32_t elem_type = onnx::TensorProto::FLOAT);

  // Adds a constant initializer (float or int64, following the tensor's dtype).
  void AddInitializer(const std::string& name, const Tensor& value);
  void AddFloatInitializer(const std::string& name, Shape shape, std::vector<float> values);
  void AddInt64Initializer(const std::string& name, Shape shape, std::vector<int64_t> values);

  // Appends a node in the default domain. Nodes must be added in topological order. An empty
  // string in `inputs` marks an omitted optional input.
  void AddNode(const std::string& op_type, const std::string& name,
               const std::vector<std::string>& inputs, const std::vector<std::string>& outputs,
               const std::vector<onnx::AttributeProto>& attributes = {});

  // Marks `name` as a graph output. Without `dims` the shape is left unspecified; with `dims`,
  // kBatchDim entries become dim_param "N".
  void AddOutput(const std::string& name, const std::optional<Shape>& dims = std::nullopt,
                 int32_t elem_type = onnx::TensorProto::FLOAT);

  // Direct access for anything the helpers above do not cover.
  onnx::GraphProto& graph() { return graph_; }
  const onnx::GraphProto& graph() const { return graph_; }

  // The model: ir_version 8, one default-domain opset_import, producer "bitsweep", the graph.
  onnx::ModelProto Build() const;

 private:
  int64_t opset_;
  onnx::GraphProto graph_;
};

// Serializes `model` to `path` (binary protobuf). Errors name the path.
absl::Status SaveModel(const onnx::ModelProto& model, const std::string& path);
// (Reading a model file is ReadOnnxModel in worker/engine/onnx_import.h.)

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_ZOO_ONNX_BUILDER_H_
