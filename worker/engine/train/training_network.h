// TrainingNetwork: an ONNX model compiled for training at a fixed batch size -- a forward pass with
// oneDNN forward_training primitives (workspaces kept), softmax cross-entropy on the host, and a
// backward pass with oneDNN backward primitives that leaves d loss / d parameter in each
// Parameter::grad. It holds the fp32 shadow parameters; Train (trainer.h) runs SGD on them.
// Tests use it directly for gradient checks: ForwardBackward computes the loss and the gradients
// of one batch and changes nothing else (with update_running_stats = false).
//
//   TrainingNetworkOptions opts;
//   opts.batch = 8;
//   ASSIGN_OR_RETURN(std::unique_ptr<TrainingNetwork> net, TrainingNetwork::Create(model, opts));
//   ASSIGN_OR_RETURN(BatchLoss l, net->ForwardBackward(images, labels,
//                                                     {.update_running_stats = false}));
//   for (const Parameter& p : net->parameters()) use(p.name, p.grad);
//   RETURN_IF_ERROR(net->Forward(images, {.training = false}));   // eval mode: net->logits()
//   RETURN_IF_ERROR(net->WriteTo(&model));                          // trained initializers
//
// Supported operators: Conv (groups, depthwise included; strides, dilations, pads/auto_pad),
// Gemm (alpha, beta, transA, transB, C broadcast), MatMul with a constant 2-D B, Relu, LeakyRelu,
// Clip, Sigmoid, HardSigmoid, HardSwish, Tanh, MaxPool, AveragePool, GlobalAveragePool, LRN,
// BatchNormalization (batch statistics in training mode, running statistics updated as
// running = m * running + (1 - m) * batch with the node's momentum attribute, default 0.9, and the
// unbiased batch variance; running statistics in eval mode; folded into the Conv before it, with
// frozen running statistics in both modes, where options.quant quantizes that Conv's weights: see
// trainer.h and conv_op.cc), Concat, Add, Sub, Mul and Div (numpy
// broadcasting on either side; gradients summed over broadcast dimensions), ReduceMean and
// ReduceMax (any axes; ReduceMax's gradient goes to the first maximum), Pad (constant, reflect,
// edge), Slice and Split (any steps), Transpose, Flatten, Reshape, Squeeze, Unsqueeze, Identity,
// Dropout (inverted dropout in training mode with the node's ratio, default 0.5; identity in eval
// mode) and a final Softmax (training uses its input as the logits). Anything else is an
// InvalidArgument error naming the node and operator. The code: training_network.cc assembles
// the network, one *_op.cc file per operator family holds its forward and backward passes
// (network_impl.h describes the pieces).
//
// Parameters are the float initializers read as Conv W and B, Gemm B and C, MatMul B,
// BatchNormalization scale and bias (folded or not), and constant operands of Add; weight decay
// applies to Conv, Gemm and MatMul weights only. Other constants (Sub, Mul and Div operands,
// values of Constant nodes) stay fixed.
//
// Values between operations are plain row-major; convolutions, pooling and LRN run in the
// (channel-blocked) layouts their fastest oneDNN kernels want, with reorders around them. Dropout
// masks come from a counter-based generator (independent of OpenMP scheduling); the same seed and
// thread count give bit-identical results. Not thread-safe; oneDNN parallelizes inside.
#ifndef BITSWEEP_WORKER_ENGINE_TRAIN_TRAINING_NETWORK_H_
#define BITSWEEP_WORKER_ENGINE_TRAIN_TRAINING_NETWORK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/tensor.h"
#include "worker/engine/train/trainer.h"

namespace bitsweep::engine {

struct TrainingNetworkOptions {
  int64_t batch = 64;
  // Shape of one sample (the input without its batch dimension); empty: the model's declared
  // input shape, which must then be fully known.
  Shape sample_shape;
  int threads = 0;              // OpenMP threads for oneDNN; 0 keeps the default
  uint64_t seed = 1;            // dropout masks
  bool input_gradient = false;  // also compute d loss / d input (input_gradient())
  FakeQuantHooks quant;         // applied in every forward pass, straight-through in backward
};

enum class ParameterRole { kWeight, kBias, kBatchNormScale, kBatchNormShift };

struct Parameter {
  std::string name;  // the initializer's name
  std::string node;  // the first node reading it
  ParameterRole role = ParameterRole::kWeight;
  bool weight_decay = false;  // true for Conv/Gemm/MatMul weights
  Tensor value;               // fp32 shadow values in the initializer's (ONNX) layout
  Tensor grad;                // d loss / d value from the last ForwardBackward, same shape
};

// BatchNormalization running mean or variance (state, not trained by gradients).
struct RunningStat {
  std::string name;  // the initializer's name
  Tensor value;
};

struct StepOptions {
  // true: BatchNormalization uses batch statistics and Dropout is active; false (eval mode):
  // running statistics and no dropout.
  bool training = true;
  // Training mode: fold this batch's statistics into the running mean and variance.
  bool update_running_stats = true;
  // Training mode: draw new dropout masks; false reuses the previous ones (gradient checks).
  bool new_dropout_masks = true;
};

struct BatchLoss {
  double loss = 0;      // mean softmax cross-entropy over the batch
  int64_t correct = 0;  // rows whose argmax is the label
};

// Mean softmax cross-entropy of `batch` rows of logits, in double precision. When `grad` is not
// null it receives (softmax - onehot) / batch. `correct` (optional) counts argmax hits (ties go
// to the lower index).
double SoftmaxCrossEntropy(const float* logits, const int* labels, int64_t batch, int64_t classes,
                           float* grad, int64_t* correct);

class TrainingNetwork {
 public:
  static absl::StatusOr<std::unique_ptr<TrainingNetwork>> Create(
      const onnx::ModelProto& model, const TrainingNetworkOptions& options);
  ~TrainingNetwork();
  TrainingNetwork(const TrainingNetwork&) = delete;
  TrainingNetwork& operator=(const TrainingNetwork&) = delete;

  int64_t batch() const;
  const Shape& input_shape() const;  // [batch, sample...]
  int64_t num_classes() const;       // logits per row
  const std::string& logits_name() const;

  // Trainable parameters, in order of first use. Values may be changed in place between steps
  // (SGD); the network reads them through their buffers, so never reassign or resize them.
  std::vector<Parameter>& parameters();
  const std::vector<Parameter>& parameters() const;
  Parameter* FindParameter(const std::string& name);
  const std::vector<RunningStat>& running_stats() const;

  // Runs the forward pass on `input` (input_shape() floats); logits() holds the result.
  absl::Status Forward(const float* input, const StepOptions& step = {});
  // Forward in training mode, loss on `labels` (batch() values), backward: overwrites every
  // Parameter::grad and, with input_gradient, input_gradient(). `step.training` is ignored.
  absl::StatusOr<BatchLoss> ForwardBackward(const float* input, const int* labels,
                                            const StepOptions& step = {});
  // [batch, num_classes] row-major, valid after Forward/ForwardBackward.
  const float* logits() const;
  // d loss / d input (input_shape()), valid after ForwardBackward with input_gradient.
  const float* input_gradient() const;

  // Overwrites the initializers of every parameter and running statistic in `model` (the model
  // this network was created from, or a copy) with the current values as float raw_data.
  absl::Status WriteTo(onnx::ModelProto* model) const;

  class Impl;

 private:
  explicit TrainingNetwork(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Accuracy and loss of `net` in eval mode on `data` (batches of net.batch(); the last partial
// batch is zero-padded and the padding ignored). `seconds`/`images_per_second` cover the runs.
absl::StatusOr<EvalResult> EvaluateTrainingNetwork(TrainingNetwork& net, const Dataset& data);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TRAIN_TRAINING_NETWORK_H_
