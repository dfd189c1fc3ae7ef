// Joining and splitting tensors along one dim. All are differentiable; split and chunk return views.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops {

// Joins tensors of equal rank, dtype and device that agree in every dim but `dim` (negative counts from the end).
// One autograd node: each input's gradient is its window of the output gradient.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// Views of consecutive pieces of `sizes[k]` elements along `dim`; the sizes must add up to x.size(dim).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// `chunks` equal pieces along `dim`; x.size(dim) must be divisible by `chunks`.
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);

}  // namespace dcae::ops
