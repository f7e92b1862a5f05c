#include "worker/engine/zoo/onnx_builder.h"

#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/engine/tensor_proto.h"

namespace bitsweep::engine {
namespace {

void FillTensorType(onnx::TypeProto* type, const std::optional<Shape>& dims, int32_t elem_type) {
  onnx::TypeProto::Tensor* tensor_type = type->mutable_tensor_type();
  tensor_type->set_elem_type(elem_type);
  if (!dims.has_value()) return;
  onnx::TensorShapeProto* shape = tensor_type->mutable_shape();
  for (int64_t d : *dims) {
    onnx::TensorShapeProto::Dimension* dim = shape->add_dim();
    if (d == kBatchDim) {
      dim->set_dim_param("N");
    } else {
      dim->set_dim_value(d);
    }
  }
}

}  // namespace

onnx::AttributeProto IntAttr(const std::string& name, int64_t value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(value);
  return a;
}

onnx::AttributeProto FloatAttr(const std::string& name, float value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(value);
  return a;
}

onnx::AttributeProto IntsAttr(const std::string& name, const std::vector<int64_t>& values) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a.add_ints(v);
  return a;
}

onnx::AttributeProto FloatsAttr(const std::string& name, const std::vector<float>& values) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOATS);
  for (float v : values) a.add_floats(v);
  return a;
}

onnx::AttributeProto StringAttr(const std::string& name, const std::string& value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::STRING);
  a.set_s(value);
  return a;
}

onnx::AttributeProto TensorAttr(const std::string& name, const Tensor& value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::TENSOR);
  *a.mutable_t() = TensorToProto(value, "");
  return a;
}

OnnxGraphBuilder::OnnxGraphBuilder(std::string graph_name, int64_t opset) : opset_(opset) {
  graph_.set_name(std::move(graph_name));
}

void OnnxGraphBuilder::AddInput(const std::string& name, const Shape& dims, int32_t elem_type) {
  onnx::ValueInfoProto* input = graph_.add_input();
  input->set_name(name);
  FillTensorType(input->mutable_type(), dims, elem_type);
}

void OnnxGraphBuilder::AddInitializer(const std::string& name, const Tensor& value) {
  *graph_.add_initializer() = TensorToProto(value, name);
}

void OnnxGraphBuilder::AddFloatInitializer(const std::string& name, Shape shape,
                                           std::vector<float> values) {
  AddInitializer(name, Tensor::Float(std::move(shape), std::move(values)));
}

void OnnxGraphBuilder::AddInt64Initializer(const std::string& name, Shape shape,
                                           std::vector<int64_t> values) {
  AddInitializer(name, Tensor::Int64(std::move(shape), std::move(values)));
}

void OnnxGraphBuilder::AddNode(const std::string& op_type, const std::string& name,
                               const std::vector<std::string>& inputs,
                               const std::vector<std::string>& outputs,
                               const std::vector<onnx::AttributeProto>& attributes) {
  onnx::NodeProto* node = graph_.add_node();
  node->set_op_type(op_type);
  node->set_name(name);
  for (const std::string& in : inputs) node->add_input(in);
  for (const std::string& out : outputs) node->add_output(out);
  for (const onnx::AttributeProto& attr : attributes) *node->add_attribute() = attr;
}

void OnnxGraphBuilder::AddOutput(const std::string& name, const std::optional<Shape>& dims,
                                 int32_t elem_type) {
  onnx::ValueInfoProto* output = graph_.add_output();
  output->set_name(name);
  FillTensorType(output->mutable_type(), dims, elem_type);
}

onnx::ModelProto OnnxGraphBuilder::Build() const {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("bitsweep");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(opset_);
  *model.mutable_graph() = graph_;
  return model;
}

absl::Status SaveModel(const onnx::ModelProto& model, const std::string& path) {
  std::string bytes;
  if (!model.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot serialize ONNX model for '", path, "'"));
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::NotFoundError(absl::StrCat("cannot open '", path, "' for writing"));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ONNX model '", path, "'"));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
