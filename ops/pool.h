// Pooling over H and W of NHWC activations (LPIPS's VGG and discriminators use it).
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

// Max over kernel x kernel windows with the given stride and no padding: [N, H, W, C] -> [N, Ho, Wo, C],
// Ho = (H - kernel) / stride + 1. The gradient goes to the first maximal element of each window.
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride);

}  // namespace dcae::ops
