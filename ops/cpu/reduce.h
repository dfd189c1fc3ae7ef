#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// Sum over `dims` (sorted, unique, non-negative), kept as size-1 dims. Output dtype = input dtype.
Tensor sum_forward(const Tensor& x, const std::vector<int64_t>& dims);
// Max over `dim` (kept as size 1); `indices` receives the i64 position of the first maximum.
Tensor max_forward(const Tensor& x, int64_t dim, Tensor& indices);
// Scatters grad (dim kept as size 1) into zeros of `shape` at `indices`.
Tensor max_backward(const Tensor& grad, const Tensor& indices, const Shape& shape, int64_t dim);

}  // namespace dcae::ops::cpu
