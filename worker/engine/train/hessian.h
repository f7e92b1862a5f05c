// Second-order sensitivities of a model's quantizable layers for the hawq planner: the trace of
// the loss Hessian with respect to each layer's weights by Hutchinson's method, and HAWQ-V3's
// sensitivity of each layer to each candidate format built from it, all from one network in one
// worker trial (TrialSpec.collect_sensitivities) instead of one trial per layer and width.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<TrainingNetwork> net, TrainingNetwork::Create(model, opts));
//   ASSIGN_OR_RETURN(std::vector<WeightTrace> traces,
//                    HutchinsonWeightTraces(*net, calibration, {.probes = 16}));
//   // traces[i].trace estimates Tr(d^2 L / d W_l^2) for the weights of layer traces[i].layer
//
//   SensitivityOptions s;
//   s.weight_formats = {fixed:8, fixed:4}; s.activation_formats = {fixed:8};
//   ASSIGN_OR_RETURN(std::vector<LayerSensitivity> table,
//                    LayerSensitivities(model, graph, calibration, layers, stats, config, s));
//
// Hutchinson: Tr(H_l) = E[v_l^T (H v)_l] over Rademacher vectors v (independent +-1 entries). By
// default each layer is probed alone (v zero outside it); with per_layer = false one
// Hessian-vector product per probe gives every layer's trace at once, but then the cross-layer
// terms, which vanish only in expectation, swamp the trace of a small layer (LeNet-5's conv1, 150
// weights next to 60,000: -6 +- 13 with 16 probes). The standard error across probes is reported.
// H v is the central difference of the backward pass's gradients, (g(w + eps v) - g(w - eps v))
// / (2 eps), with eps = relative_step x the RMS of the probed weights (the layer's). The default
// 0.1 is the size of a 3-4 bit quantization error: the curvature averaged at the scale that
// matters here, across the ReLU and max-pool kinks a tiny step would straddle; with 1e-3 the
// float gradients' rounding made LeNet-5's conv1 trace -111 +- 29 (joint probes, all weights'
// RMS), 23 +- 7 (per layer), against 11 +- 2 at 0.1, whose 0.5 Tr/n ||dW||^2 at fixed:3 was
// within 2x of the measured loss increase for every layer. L is the mean softmax
// cross-entropy over the first `samples` samples in training mode (TrainingNetwork::
// ForwardBackward: BatchNormalization with batch statistics, running statistics left alone,
// dropout masks drawn once and reused), so every difference sees the same function.
//
// Sensitivities (HAWQ-V3, Yao et al. 2021): quantizing layer l's weights to format b moves them
// by d = Q_b(W_l) - W_l; the second-order Taylor term 0.5 d^T H_l d, with d's direction taken as
// isotropic, predicts the loss increase 0.5 x Tr(H_l) / n_l x ||d||^2 (HAWQ-V3's Omega, halved
// to be in nats). Q_b is the fine-tuning hook's weight quantizer (trial.h, HooksFromPlan): the
// engine's per-tensor / per-channel calibration of the weights as they are. Activation formats
// are measured instead: the loss increase of a forward pass (eval mode, as inference runs) with
// only that layer's input and output quantized by the engine's calibrated quantizers
// (BuildQuantPlan). With `measure_weights` the weights' loss increases are measured the same way,
// so predicted and measured can be compared.
#ifndef BITSWEEP_WORKER_ENGINE_TRAIN_HESSIAN_H_
#define BITSWEEP_WORKER_ENGINE_TRAIN_HESSIAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/graph.h"
#include "quant/layer_info.h"
#include "quant/config.h"
#include "quant/format.h"
#include "worker/engine/stop.h"
#include "worker/engine/train/training_network.h"

namespace bitsweep::engine {

struct HutchinsonOptions {
  int probes = 8;               // Rademacher vectors (per layer with per_layer), >= 1
  int64_t samples = 256;        // the first samples of the data (whole batches of the network's)
  double relative_step = 0.1;   // eps = relative_step x RMS of the probed weights (see above)
  uint64_t seed = 1;            // the probes
  // true: each weight tensor is probed on its own (v zero elsewhere), so the other layers'
  // curvature adds no variance; `probes` Hessian-vector products per tensor. false: one product
  // per probe for all tensors at once.
  bool per_layer = true;
  StopFn stop;                  // polled before every batch: CANCELLED
};

// One weight parameter (of a Conv, Gemm or MatMul) and the trace of its Hessian block.
struct WeightTrace {
  std::string layer;      // the node reading it
  std::string parameter;  // the initializer
  int64_t count = 0;      // n_l
  double trace = 0;       // mean over probes of v_l^T (H v)_l
  double standard_error = 0;  // of that mean (sample standard deviation / sqrt(probes))
};

// Every weight parameter of `net` (TrainingNetwork::parameters(), role kWeight), in order.
// Parameters are restored bit-exactly; gradients are left overwritten. INVALID_ARGUMENT when the
// options are out of range or `data` has fewer samples than one batch of the network.
absl::StatusOr<std::vector<WeightTrace>> HutchinsonWeightTraces(TrainingNetwork& net,
                                                                const Dataset& data,
                                                                const HutchinsonOptions& options);

struct SensitivityOptions {
  HutchinsonOptions hutchinson;
  std::vector<quant::NumberFormat> weight_formats;
  std::vector<quant::NumberFormat> activation_formats;
  bool measure_weights = true;  // also measure each weight format's loss increase
  int64_t batch = 64;           // of the training network
  int threads = 0;              // OpenMP threads for oneDNN; 0 keeps the default
};

struct FormatSensitivity {
  quant::NumberFormat format;
  double squared_error = 0;    // weights: ||Q(W) - W||^2
  double loss_increase = 0;    // weights: predicted (see above); activations: measured
  double measured_loss_increase = 0;  // weights without measure_weights: 0
};

struct LayerSensitivity {
  std::string layer;
  int64_t weight_count = 0;
  double trace = 0, trace_standard_error = 0;
  std::vector<FormatSensitivity> weights;      // parallel to SensitivityOptions::weight_formats
  std::vector<FormatSensitivity> activations;  // parallel to activation_formats
};

// Sensitivities of every layer in `layers` (InspectLayers of `graph`, imported from `model`).
// `stats` are the fp32 activation statistics on a calibration split (with histograms when the
// config's calibration method needs them); `config` gives rounding and calibration settings (its
// formats are ignored); `data` is the calibration split. Errors name the layer or format.
absl::StatusOr<std::vector<LayerSensitivity>> LayerSensitivities(
    const onnx::ModelProto& model, const Graph& graph, const Dataset& data,
    const std::vector<quant::LayerInfo>& layers, const ActivationStatsMap& stats,
    const quant::QuantConfig& config, const SensitivityOptions& options);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TRAIN_HESSIAN_H_
