// CUDA kernels for ops/glu.h (same signatures as ops/cpu/glu.h). Rows whose half-width is a multiple of the 16-byte
// vector move as 16-byte packs; bf16/f16 compute in fp32.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

Tensor silu_gate_forward(const Tensor& x);
Tensor silu_gate_backward(const Tensor& grad, const Tensor& x);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_silu_gate_forward ~,
#define DCAE_CUDA_KERNEL_silu_gate_backward ~,
