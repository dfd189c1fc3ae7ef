// Scaled dot-product attention through cuDNN 9's fused flash-attention engines (on Hopper the wgmma/TMA kernels
// PyTorch's SDPA runs), driven through the backend graph API (graphs in cudnn_attention_graph.h).
//
// One plan per problem (sizes, operand strides, dtype, direction, device) and thread, built on first use from
// cuDNN's heuristic and cached - including the answer "cuDNN has no engine for this", so a refused problem costs
// one query. Workspace and the backward's fp32 scratch come from our caching allocator. attention.cu decides
// when to ask (ops/cuda/attention.h: AttentionBackend) and falls back to its own kernels on a refusal.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/cuda/attention_common.h"

namespace dcae::ops::cuda::attention_detail {

// Whether the graphs can express the problem at all: bf16/f16, no mask, D and Dv multiples of 8 (16-byte rows),
// every size positive, no dscores. Whether cuDNN has an engine for it is only known once asked.
bool cudnn_attention_expressible(const AttentionParams& p, DType dtype);

// Forward: p.out and p.lse ([B, H, Lq] fp32, natural-log log-sum-exp of the scaled scores) from p.q, p.k, p.v.
// Backward: p.dq, p.dk, p.dv from p.q, p.k, p.v, p.o, p.grad and p.lse. Outputs are contiguous. Both run on the
// current stream of `device` and return true, or return false having done nothing when cuDNN has no engine.
bool cudnn_attention_forward(const AttentionParams& p, DType dtype, int device);
bool cudnn_attention_backward(const AttentionParams& p, DType dtype, int device);

// cuDNN's engine index of the plan this thread ran last (-1 before any).
int64_t cudnn_attention_last_engine();

// The cuDNN library's version at run time (e.g. 91400 for 9.14.0).
int64_t cudnn_runtime_version();

// What cuDNN answers for a problem, for probes: every engine configuration its heuristics propose (mode A, then
// the fallback list), whether a plan finalized for it, its workspace and notes; or why the graph was refused.
struct CudnnAttentionEngine {
  int64_t engine_id = -1;
  bool finalized = false;
  bool runtime_compiled = false;
  int64_t workspace_bytes = 0;
  std::string heuristic;  // "A" or "fallback"
  std::string error;      // cuDNN's message when the plan did not finalize
};
struct CudnnAttentionReport {
  std::string refusal;  // non-empty when the graph (or a known cuDNN limitation) rules the problem out
  double build_ms = 0;  // graph and heuristics query
  std::vector<CudnnAttentionEngine> engines;
};
CudnnAttentionReport cudnn_attention_report(const AttentionParams& p, DType dtype, int device, bool backward);

}  // namespace dcae::ops::cuda::attention_detail
