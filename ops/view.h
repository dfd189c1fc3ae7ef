// Differentiable views and casts. They share storage like the raw Tensor methods they wrap, and record how to
// route the gradient back. Code above ops/ uses these, never the raw methods, on tensors that may need grad.
#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops {

Tensor reshape(const Tensor& x, const Shape& shape);
Tensor permute(const Tensor& x, const std::vector<int64_t>& order);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor contiguous(const Tensor& x);
// dtype cast; the gradient is cast back to the input dtype (mixed precision goes through here).
Tensor cast(const Tensor& x, DType dtype);

}  // namespace dcae::ops
