// CUDA kernels for ops/matmul.h (same signatures as ops/cpu/matmul.h), on cuBLASLt (ops/cuda/gemm.h).
// Operands whose last two dims are row- or column-major (any leading dimension: transposed views, narrowed
// columns) and whose batch dims collapse to one stride (broadcast included) are read in place; others are packed.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

Tensor matmul_forward(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b);
// x [..., in] @ weight[out, in]^T + bias[out] with the bias added in the GEMM's epilogue.
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_matmul_forward ~,
#define DCAE_CUDA_KERNEL_linear_forward ~,
