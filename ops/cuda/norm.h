// CUDA kernels for ops/norm.h (same signatures and semantics as ops/cpu/norm.h). Statistics are fp32 for f32, bf16
// and f16 inputs and f64 for f64; the saved mean/rstd have that dtype. Outputs and gradients have x's dtype.
//   row_norm_*   (RMSNorm / LayerNorm): one warp per row with 16-byte loads and the row held in registers, the
//                backward fusing grad_x with per-block partial sums of the parameter gradients (row_norm.cu).
//   group_norm_*, batch_norm_*: per-(sample, channel) sums in f64 over row chunks, then one fused pass that
//                applies the folded per-channel affine (group_norm.cu).
#pragma once
#include <array>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

// {input, weight, bias}: which gradients a backward kernel produces (as ops::cpu::NormGradMask).
using NormGradMask = std::array<bool, 3>;

Tensor row_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool center,
                        Tensor& mean, Tensor& rstd);
std::vector<Tensor> row_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                      const Tensor& rstd, bool center, NormGradMask needs);

Tensor group_norm_forward(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps,
                          Tensor& mean, Tensor& rstd);
std::vector<Tensor> group_norm_backward(const Tensor& grad, const Tensor& x, int64_t groups, const Tensor& weight,
                                        const Tensor& mean, const Tensor& rstd, NormGradMask needs);

Tensor batch_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                          Tensor running_var, bool training, double momentum, double eps, Tensor& mean, Tensor& rstd);
std::vector<Tensor> batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                        const Tensor& rstd, bool training, NormGradMask needs);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_row_norm_forward ~,
#define DCAE_CUDA_KERNEL_row_norm_backward ~,
#define DCAE_CUDA_KERNEL_group_norm_forward ~,
#define DCAE_CUDA_KERNEL_group_norm_backward ~,
#define DCAE_CUDA_KERNEL_batch_norm_forward ~,
#define DCAE_CUDA_KERNEL_batch_norm_backward ~,
