// Inference-time graph rewrites applied before compilation.
//
// FoldBatchNorm folds a BatchNormalization that follows a Conv with constant weights into that
// Conv (Ristretto and every deployment flow measure the folded network). FuseActivations moves an
// activation that is the only reader of a Conv/Gemm/MatMul output into the layer's post-op chain,
// so it runs inside the layer's oneDNN primitive.
//
//   RETURN_IF_ERROR(FoldBatchNorm(&graph));
//   RETURN_IF_ERROR(FuseActivations(&graph));
#ifndef BITSWEEP_WORKER_ENGINE_GRAPH_PASSES_H_
#define BITSWEEP_WORKER_ENGINE_GRAPH_PASSES_H_

#include "absl/status/status.h"
#include "worker/engine/graph.h"

namespace bitsweep::engine {

// Returns the number of BatchNormalization nodes folded.
int FoldBatchNorm(Graph* graph);
// Returns the number of activations fused.
int FuseActivations(Graph* graph);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_GRAPH_PASSES_H_
