// The operation graphs of cuDNN's fused flash attention, built with cuDNN 9's backend (graph) API alone (no
// cudnn-frontend): the forward with the softmax statistics saved for training, and the backward from dO, O and
// those statistics. cuDNN's SDPA engines recognise these exact patterns (the ones cudnn-frontend's composite SDPA
// nodes emit): change an op, a data type or the order and the heuristics offer no engine.
//
// Forward:  S = Q K^T (fp32), S *= scale, M = rowmax(S), E = exp(S - M), Z = rowsum(E), Stats = M + log Z,
//           P = E / Z (in the I/O dtype), O = P V.
// Backward: Dsum = rowsum(dO * O) * 1, P = exp(scale Q K^T - Stats), dV = P^T dO, dS = P (dO V^T - Dsum) scale,
//           dK = dS^T Q, dQ = identity(dS K accumulated in fp32).
// Stats is the natural-log log-sum-exp of the scaled scores per query row: the `logsumexp` our own kernels save,
// so either backward runs after either forward.
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include <cudnn_graph.h>

#include "ops/cuda/attention_common.h"
#include "ops/cuda/cudnn_descriptor.h"

namespace dcae::ops::cuda::attention_detail {

using cudnn::cudnn_last_error;
using cudnn::Descriptor;

// Unique ids of the tensors that reach memory, in graphs and variant packs.
enum AttentionUid : int64_t {
  kUidQ = 1, kUidK, kUidV, kUidO, kUidStats, kUidScale,  // forward (and the backward's inputs)
  kUidGradO, kUidOne, kUidRowDot, kUidGradQAccum, kUidGradQ, kUidGradK, kUidGradV,  // backward only
};

// One finalized operation graph with every descriptor it refers to (plans built from it keep it alive).
struct AttentionGraph {
  std::deque<Descriptor> parts;  // a deque: references to earlier parts stay valid as it grows
  Descriptor graph{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR};
  bool backward = false;
};

// The problem a graph is built for: sizes, the operands' element strides over (B, H, L) (the last dim
// contiguous; outputs, Stats and the backward's fp32 scratch contiguous) and the I/O dtype (bf16 or f16).
struct AttentionGraphShape {
  int64_t batch = 0, heads = 0, lq = 0, lk = 0, d = 0, dv = 0;
  Strides3 q, k, v, o, grad_o;
  DType dtype = DType::bf16;
};

// Builds and finalizes the graph, or returns false with `error` naming the operation cuDNN refused and why.
bool build_attention_forward_graph(const AttentionGraphShape& s, cudnnHandle_t handle, AttentionGraph& graph,
                                   std::string& error);
bool build_attention_backward_graph(const AttentionGraphShape& s, cudnnHandle_t handle, AttentionGraph& graph,
                                    std::string& error);

}  // namespace dcae::ops::cuda::attention_detail
