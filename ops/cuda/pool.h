// CUDA kernels for ops/pool.h (same signatures as ops/cpu/pool.h): the pooled values and argmax equal the CPU's
// exactly; the gradient is scattered through argmax with atomic adds in the compute type (fp32, fp64 for f64), so
// where windows overlap the order of the additions - and the last bit - may differ from the CPU's.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

Tensor max_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, Tensor& argmax);
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& argmax, const Shape& input_shape);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_max_pool2d_forward ~,
#define DCAE_CUDA_KERNEL_max_pool2d_backward ~,
