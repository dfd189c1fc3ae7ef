#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// Returns the pooled values; `argmax` receives, per output element, the flat index (h * W + w) of the chosen input.
Tensor max_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, Tensor& argmax);
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& argmax, const Shape& input_shape);

}  // namespace dcae::ops::cpu
