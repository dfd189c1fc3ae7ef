// CUDA kernels for ops/reduce.h (same signatures as ops/cpu/reduce.h). Sums accumulate in fp64 for every dtype.
#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

// Sum over `dims` (sorted, unique, non-negative), kept as size-1 dims. Output dtype = input dtype.
Tensor sum_forward(const Tensor& x, const std::vector<int64_t>& dims);
// Max over `dim` (kept as size 1); `indices` receives the i64 position of the first maximum (NaN wins).
Tensor max_forward(const Tensor& x, int64_t dim, Tensor& indices);
// Scatters grad (dim kept as size 1) into zeros of `shape` at `indices`.
Tensor max_backward(const Tensor& grad, const Tensor& indices, const Shape& shape, int64_t dim);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_sum_forward ~,
#define DCAE_CUDA_KERNEL_max_forward ~,
#define DCAE_CUDA_KERNEL_max_backward ~,
