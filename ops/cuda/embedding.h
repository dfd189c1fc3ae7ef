// CUDA kernels for ops/embedding.h (same signatures and semantics as ops/cpu/embedding.h).
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

// Row gather (16-byte copies when rows allow). The index range check runs on the device and reads one flag back
// (a host synchronisation), so an out-of-range index throws naming it and V as on the CPU.
Tensor embedding_forward(const Tensor& weight, const Tensor& indices);
// Scatter-add into zeros in the compute dtype: a thread per column walks the indices in order, so repeated indices
// accumulate deterministically in the CPU's order.
Tensor embedding_backward(const Tensor& grad, const Tensor& indices, int64_t num_embeddings);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_embedding_forward ~,
#define DCAE_CUDA_KERNEL_embedding_backward ~,
