// True int8 evaluation: Evaluate (evaluate.h) and RunTrial (trial.h) with the quantized layers
// running on oneDNN's int8 primitives (int8_network.h) instead of the fp32 emulation. What
// `bitsweep eval --int8 --config C.json` runs; its accuracy is checked against the emulation's in
// tests/engine/int8_test.cc (top-1 within 0.1 point).
//
//   EvalOptions options;
//   options.quant = &plan;                      // required: an int:8:sym plan (BuildQuantPlan)
//   ASSIGN_OR_RETURN(EvalResult r, EvaluateInt8(graph, dataset, options));
//
//   ASSIGN_OR_RETURN(TrialResult t, RunInt8Trial(inputs, {.batch = 256, .threads = 2}));
//
// Configs the int8 path cannot run exactly (fixed/minifloat/pow2 formats, int widths other than
// 8, asymmetric formats, weights-only quantization, rounding other than nearest_even) are
// InvalidArgument errors naming the layer, the role and the reason; nothing falls back to the
// emulation.
#ifndef BITSWEEP_WORKER_ENGINE_INT8_INT8_EVALUATE_H_
#define BITSWEEP_WORKER_ENGINE_INT8_INT8_EVALUATE_H_

#include "absl/status/statusor.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/graph.h"
#include "worker/engine/trial.h"

namespace bitsweep::engine::int8 {

// Like Evaluate, through an Int8Network; `options.quant` is required. The last partial batch is
// zero-padded as in Evaluate. `seconds` and `images_per_second` exclude compilation.
absl::StatusOr<EvalResult> EvaluateInt8(const Graph& graph, const Dataset& dataset,
                                        const EvalOptions& options);

// Like RunTrial (same formats, calibration, plan and cost model), but the evaluation runs through
// EvaluateInt8. The config is checked before calibration, so a config the int8 path cannot run
// fails fast.
absl::StatusOr<TrialResult> RunInt8Trial(const TrialInputs& inputs, const EvalOptions& options);

}  // namespace bitsweep::engine::int8

#endif  // BITSWEEP_WORKER_ENGINE_INT8_INT8_EVALUATE_H_
