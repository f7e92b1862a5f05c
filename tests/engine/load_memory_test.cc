// Loading without copies: Tensor's shared values, the model file reader that reads weights
// straight into Tensors (against the in-memory import of the same model, including unusual but
// valid field orders and bad files), and Network::Create compiling from the caller's weights
// without changing them or keeping them shared.
#include <cmath>
#include <fstream>
#include <string>
#include <utility>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "gtest/gtest.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::engine {
namespace {

using google::protobuf::internal::WireFormatLite;

TEST(TensorTest, CopiesAreDeepAndSharedValuesAreCopiedOnWrite) {
  Tensor t = Tensor::Float({2}, {1.0f, 2.0f});
  Tensor copy = t;
  copy.floats()[0] = 9.0f;
  EXPECT_EQ(t.floats()[0], 1.0f);
  EXPECT_FALSE(t.shared());

  Tensor shared = t.Share();
  EXPECT_TRUE(t.shared());
  EXPECT_EQ(std::as_const(shared).floats().data(), std::as_const(t).floats().data());
  shared.floats()[1] = 7.0f;  // copies first
  EXPECT_EQ(t.floats()[1], 2.0f);
  EXPECT_EQ(shared.floats()[1], 7.0f);
  EXPECT_FALSE(t.shared());
  EXPECT_FALSE(shared.shared());

  Tensor ints = Tensor::Int64({3}, {1, 2, 3});
  Tensor ints_shared = ints.Share();
  ints.int64s()[2] = -1;  // the writer copies; the other keeps the old values
  EXPECT_EQ(ints_shared.int64s(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(ints.int64s(), (std::vector<int64_t>{1, 2, -1}));
}

constexpr int64_t kIn = 40, kOut = 30, kIndices = 1100;

std::vector<float> Weights() {
  std::vector<float> w(kOut * kIn);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i % 97) - 0.3f;
  return w;
}

// x [N, 40] -> Gemm(W [30, 40] (1,200 values: above the reader's threshold), transB, alpha 2)
// -> Reshape to Gather(big int64 table [1,100], [0, 1]) = [-1, 30]. W is left out when
// `with_weights` is false.
onnx::ModelProto Model(bool with_weights) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, kIn});
  if (with_weights) b.AddFloatInitializer("W", {kOut, kIn}, Weights());
  std::vector<float> bias(kOut);
  for (int64_t i = 0; i < kOut; ++i) bias[i] = 0.5f * static_cast<float>(i);
  b.AddFloatInitializer("B", {kOut}, bias);
  std::vector<int64_t> table(kIndices);
  for (int64_t i = 0; i < kIndices; ++i) table[i] = 1000 + i;
  table[0] = -1;
  table[1] = kOut;
  b.AddInt64Initializer("table", {kIndices}, table);
  b.AddInt64Initializer("pick", {2}, {0, 1});
  b.AddNode("Gemm", "fc", {"x", "W", "B"}, {"y"}, {IntAttr("transB", 1), FloatAttr("alpha", 2)});
  b.AddNode("Gather", "shape", {"table", "pick"}, {"target"});
  b.AddNode("Reshape", "reshape", {"y", "target"}, {"out"});
  b.AddOutput("out", Shape{kBatchDim, kOut});
  return b.Build();
}

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

void ExpectSameGraph(const Graph& a, const Graph& b) {
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    EXPECT_EQ(a.nodes[i].name, b.nodes[i].name);
    EXPECT_EQ(a.nodes[i].inputs, b.nodes[i].inputs);
    EXPECT_EQ(a.nodes[i].target_shape, b.nodes[i].target_shape);
  }
  ASSERT_EQ(a.constants.size(), b.constants.size());
  for (const auto& [name, t] : a.constants) {
    ASSERT_TRUE(b.IsConstant(name)) << name;
    const Tensor& u = b.constants.at(name);
    EXPECT_EQ(t.dtype(), u.dtype()) << name;
    EXPECT_EQ(t.shape(), u.shape()) << name;
    EXPECT_EQ(t.floats(), u.floats()) << name;
    EXPECT_EQ(t.int64s(), u.int64s()) << name;
  }
}

TEST(ModelFileTest, FileImportEqualsTheInMemoryImport) {
  const onnx::ModelProto model = Model(true);
  const std::string path = TempPath("load_memory_gemm.onnx");
  ASSERT_TRUE(SaveModel(model, path).ok());
  absl::StatusOr<Graph> from_file = ImportOnnxFile(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  absl::StatusOr<Graph> in_memory = ImportOnnxModel(model);
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  ExpectSameGraph(*from_file, *in_memory);
  EXPECT_EQ(from_file->constants.at("W").floats(), Weights());
  // The folded Reshape target came from the large int64 table read by the file reader.
  ASSERT_EQ(from_file->nodes.size(), 2u);
  EXPECT_EQ(from_file->nodes[1].target_shape, (std::vector<int64_t>{-1, kOut}));
}

// Bytes of a length-delimited field.
std::string BytesField(int field, const std::string& bytes) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.WriteTag(WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  coded.WriteVarint32(static_cast<uint32_t>(bytes.size()));
  coded.WriteString(bytes);
  return out;
}

std::string VarintField(int field, uint64_t value) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.WriteTag(WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_VARINT));
  coded.WriteVarint64(value);
  return out;
}

// The model without W, followed by a second graph field (protobuf merges the two) holding W as
// a TensorProto whose raw data comes before its dims, type and name. `values` floats of data.
std::string ModelWithLateWeights(int64_t values) {
  std::vector<float> w = Weights();
  w.resize(values, 0.25f);
  const std::string raw(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
  const std::string tensor = BytesField(9, raw) + VarintField(1, kOut) + VarintField(1, kIn) +
                             VarintField(2, onnx::TensorProto::FLOAT) + BytesField(8, "W");
  return Model(false).SerializeAsString() + BytesField(7, BytesField(5, tensor));
}

TEST(ModelFileTest, RawDataBeforeTheTypeAndARepeatedGraphFieldReadTheSame) {
  const std::string path = TempPath("load_memory_late_weights.onnx");
  WriteFile(path, ModelWithLateWeights(kOut * kIn));
  absl::StatusOr<Graph> from_file = ImportOnnxFile(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  absl::StatusOr<Graph> in_memory = ImportOnnxModel(Model(true));
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  ExpectSameGraph(*from_file, *in_memory);
}

TEST(ModelFileTest, WrongRawDataSizeAndTruncatedFilesAreRefused) {
  const std::string short_path = TempPath("load_memory_short.onnx");
  WriteFile(short_path, ModelWithLateWeights(kOut * kIn - 1));
  absl::StatusOr<Graph> wrong = ImportOnnxFile(short_path);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("tensor 'W': shape needs 1200 values but the proto "
                                          "holds 1199"),
            std::string::npos)
      << wrong.status();

  const std::string bytes = Model(true).SerializeAsString();
  const std::string cut_path = TempPath("load_memory_cut.onnx");
  WriteFile(cut_path, bytes.substr(0, bytes.size() / 2));
  absl::StatusOr<Graph> cut = ImportOnnxFile(cut_path);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cut.status().message().find(cut_path), std::string::npos) << cut.status();
  EXPECT_NE(cut.status().message().find("not an ONNX model"), std::string::npos) << cut.status();
}

TEST(NetworkSharingTest, CreateNeitherChangesNorKeepsTheCallersWeights) {
  absl::StatusOr<Graph> graph = ImportOnnxModel(Model(true));
  ASSERT_TRUE(graph.ok()) << graph.status();
  NetworkOptions options;
  options.batch = 2;
  // alpha 2 scales B on the network's side: the caller's W must keep its values.
  absl::StatusOr<std::unique_ptr<Network>> net = Network::Create(*graph, options);
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ(graph->constants.at("W").floats(), Weights());
  for (const auto& [name, t] : graph->constants) EXPECT_FALSE(t.shared()) << name;

  Tensor x = Tensor::Float({2, kIn});
  for (int64_t i = 0; i < x.num_elements(); ++i) x.floats()[i] = 0.05f * static_cast<float>(i % 13);
  std::map<std::string, Tensor> outputs;
  ASSERT_TRUE((*net)->Run({{"x", &x}}, &outputs).ok());
  const std::vector<float> w = Weights();
  const Tensor& out = outputs.at("out");
  ASSERT_EQ(out.shape(), (Shape{2, kOut}));
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t o = 0; o < kOut; ++o) {
      double dot = 0;
      for (int64_t k = 0; k < kIn; ++k) dot += double{x.floats()[r * kIn + k]} * w[o * kIn + k];
      const double want = 2.0 * dot + 0.5 * static_cast<double>(o);
      EXPECT_NEAR(out.floats()[r * kOut + o], want, 1e-4 * (1.0 + std::abs(want)));
    }
  }
}

}  // namespace
}  // namespace bitsweep::engine
