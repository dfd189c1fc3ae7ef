// CUDA kernels for ops/attention.h (same signatures and semantics as ops/cpu/attention.h).
//
// Scaled dot-product attention is flash-style: no [Lq, Lk] matrix is ever stored (except dscores when asked for).
// bf16/f16 with D == Dv, D % 8 == 0 and D <= 128 run on tensor cores (mma.sync m16n8k16, fp32 accumulation, the
// probabilities rounded to the input dtype for the P V product as FlashAttention-2 does); everything else (f32,
// f64, other head sizes) runs a shared-memory SIMT kernel in the compute dtype. Forward keeps the per-row
// log-sum-exp. The tensor-core backward is FlashAttention-2's: D_i = sum_c dO_ic O_ic from the forward output `out`
// (recomputed when undefined), one kernel per key tile for dk and dv, dq accumulated in fp32 with atomics; the SIMT
// backward is deterministic (a query-tile kernel for D, dq and dscores, a key-tile kernel for dk and dv).
//
// ReLU linear attention is fused per (image, head): a token-chunked reduction M = K^T [V, 1] in fp32 (f64 for f64),
// then one pass out = (Q M)[:, :d] / ((Q M)[:, d] + eps) straight from and to the NHWC maps; the backward adds the
// reduction dM = Q^T dO' and a pass for dq, dk and dv. The quadratic form runs a block per head.
#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

Tensor attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
                         Tensor& logsumexp);
std::vector<Tensor> attention_backward(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& mask, double scale, const Tensor& logsumexp, const Tensor& out,
                                       bool want_scores);

Tensor relu_linear_attention_forward(const Tensor& qkv, int64_t head_dim, double eps, bool quadratic);
Tensor relu_linear_attention_backward(const Tensor& grad, const Tensor& qkv, int64_t head_dim, double eps,
                                      bool quadratic);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_attention_forward ~,
#define DCAE_CUDA_KERNEL_attention_backward ~,
#define DCAE_CUDA_KERNEL_relu_linear_attention_forward ~,
#define DCAE_CUDA_KERNEL_relu_linear_attention_backward ~,
