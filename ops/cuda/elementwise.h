// CUDA kernels for ops/elementwise.h (same signatures as ops/cpu/elementwise.h).
#pragma once
#include "ops/elementwise.h"

namespace dcae::ops::cuda {

// Broadcasting binary op; the result has a's dtype. Contiguous same-shape operands take 16-byte vector loads.
Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor where_forward(const Tensor& cond, const Tensor& a, const Tensor& b);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_binary_forward ~,
#define DCAE_CUDA_KERNEL_where_forward ~,
