// Matrix products. Operands share one floating dtype and device; bf16/f16 are computed in f32 and rounded back.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

// op(a) @ op(b) over the last two dims: a [..., M, K], b [..., K, N] -> [..., M, N], where op transposes the last
// two dims when the flag is set (a is then [..., K, M], b [..., N, K]). Batch dims (all but the last two)
// broadcast numpy-style, so a 2-D b is shared by every matrix of a batched a. Both operands need >= 2 dims.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);

// Batched product of equal batches: a [B, M, K], b [B, K, N] -> [B, M, N].
Tensor bmm(const Tensor& a, const Tensor& b);

// x [..., in] @ weight[out, in]^T (+ bias [out]) -> [..., out]; bias may be undefined. x may be 1-D.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace dcae::ops
