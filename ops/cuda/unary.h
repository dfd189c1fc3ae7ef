// CUDA kernels for ops/unary.h (same signatures as ops/cpu/unary.h). bf16/f16 compute in fp32.
#pragma once
#include "ops/unary.h"

namespace dcae::ops::cuda {

Tensor unary_forward(UnaryOp op, const Tensor& x, double p0, double p1);
// grad * f'(x), in one pass; the result has grad's dtype.
Tensor unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, double p0, double p1);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_unary_forward ~,
#define DCAE_CUDA_KERNEL_unary_backward ~,
