// CUDA kernels for ops/attention.h (same signatures and semantics as ops/cpu/attention.h).
//
// Scaled dot-product attention is flash-style: no [Lq, Lk] matrix is ever stored (except dscores when asked for).
// bf16/f16 without a mask and with head sizes that are multiples of 8 may run cuDNN's fused flash attention instead
// (cudnn_attention.h; see AttentionBackend below), with the same saved log-sum-exp, so either backward follows
// either forward. Otherwise, or where cuDNN has no engine, our own kernels run:
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
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

Tensor attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
                         Tensor& logsumexp);
std::vector<Tensor> attention_backward(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& mask, double scale, const Tensor& logsumexp, const Tensor& out,
                                       bool want_scores);

// Where scaled dot-product attention asks cuDNN's fused flash attention (bf16/f16, no mask, no dscores, head
// sizes multiples of 8): `automatic` where cuDNN's Hopper kernels beat ours on an H200 (bench/results/h200_sdpa.md:
// the forward from 192 keys on, the backward from 128), `cudnn` at every size (tests, benchmarks), `own` never.
// Wherever cuDNN is not asked or has no engine for the problem, our kernels run. DCAE_ATTENTION_BACKEND=auto|cudnn|own
// sets it at start-up.
enum class AttentionBackend { automatic, cudnn, own };
constexpr int64_t kCudnnAttentionForwardMinKeys = 192;
constexpr int64_t kCudnnAttentionBackwardMinKeys = 128;
AttentionBackend attention_backend();
AttentionBackend set_attention_backend(AttentionBackend backend);  // returns the previous setting
// The setting DCAE_ATTENTION_BACKEND names: "auto" (or empty), "cudnn" or "own"; anything else throws naming it.
AttentionBackend attention_backend_from_string(const std::string& value);

// The kernels this thread's last attention_forward or attention_backward ran: "cudnn engine N", "mma" (our
// tensor-core kernels) or "simt".
std::string last_attention_kernels();

Tensor relu_linear_attention_forward(const Tensor& qkv, int64_t head_dim, double eps, bool quadratic);
Tensor relu_linear_attention_backward(const Tensor& grad, const Tensor& qkv, int64_t head_dim, double eps,
                                      bool quadratic);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_attention_forward ~,
#define DCAE_CUDA_KERNEL_attention_backward ~,
#define DCAE_CUDA_KERNEL_relu_linear_attention_forward ~,
#define DCAE_CUDA_KERNEL_relu_linear_attention_backward ~,
