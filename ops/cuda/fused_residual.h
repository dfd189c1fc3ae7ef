// Inference kernels that fold a residual add into the pass producing its other operand (one read of each input and
// one write, instead of a separate add over the whole activation). ops/fused.h picks them when no gradient is
// needed. RMSNorm + residual lives with the other row-norm kernels (row_norm.cu).
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

// residual + rms_norm(x, weight, bias, eps), rounded once.
Tensor add_rms_norm_forward(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias,
                            double eps);
// residual + y * scale[c] + shift[c] over the last (channel) dim, rounded once; scale/shift are [C] (any float
// dtype; used in fp32, f64 for f64 tensors).
Tensor residual_channel_affine(const Tensor& residual, const Tensor& y, const Tensor& scale, const Tensor& shift);

}  // namespace dcae::ops::cuda
