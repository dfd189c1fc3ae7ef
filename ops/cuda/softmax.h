// CUDA kernels for ops/softmax.h (same signatures and semantics as ops/cpu/softmax.h, NaN rows included). bf16/f16
// compute in fp32. The last dim takes a warp (or, for long rows, a block) per row with an online max/sum; other
// dims take a thread per (outer, inner) column, so neighbouring threads read neighbouring addresses.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

Tensor softmax_forward(const Tensor& x, int64_t dim, bool log);
Tensor softmax_backward(const Tensor& grad, const Tensor& out, int64_t dim, bool log);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_softmax_forward ~,
#define DCAE_CUDA_KERNEL_softmax_backward ~,
