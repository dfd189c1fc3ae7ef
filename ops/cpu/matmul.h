// CPU GEMM kernels over Eigen maps. `gemm` is the one place that touches Eigen, so other kernel families (conv2d)
// reuse it on raw buffers with row strides.
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// C = op(A) op(B) (or C += ... when `accumulate`), all row-major. op(A) is [M, K]: A is stored [M, K] with row
// stride lda, or [K, M] when transpose_a. Likewise op(B) is [K, N]. C is [M, N] with row stride ldc. Uses Eigen's
// OpenMP threading unless called from inside a parallel region. T is float or double.
template <typename T>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate);

// op(a) op(b) over the last two dims, batch dims broadcast; inputs share one floating dtype, shapes are checked
// by the caller. Output in the input dtype (bf16/f16 computed in f32).
Tensor matmul_forward(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b);

// x [..., in] @ weight[out, in]^T + bias[out] (x has >= 2 dims); bf16/f16 round once, after the bias is added.
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias);

}  // namespace dcae::ops::cpu
