// CPU conv2d kernels (NHWC activations, weights [Cout, Cin / groups, kh, kw]). Three paths: 1x1 stride-1 unpadded
// convs are GEMMs straight on the activations, depthwise convs (groups == Cin == Cout) a direct loop vectorised
// over channels, everything else im2col + GEMM per group (col2im for the input gradient), in chunks of output rows.
// Arguments are checked by ops/conv2d.cpp; inputs share one floating dtype and results come back in it.
#pragma once
#include <cstdint>

#include "ops/conv2d.h"

namespace dcae::ops::cpu {

Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params);
// Gradient of x ([N, H, W, Cin] = x_shape) from the output gradient.
Tensor conv2d_backward_input(const Tensor& grad_out, const Tensor& weight, const Shape& x_shape,
                             const Conv2dParams& params);
// Gradient of the weight (weight_shape, PyTorch layout) from the output gradient.
Tensor conv2d_backward_weight(const Tensor& grad_out, const Tensor& x, const Shape& weight_shape,
                              const Conv2dParams& params);

// The im2col buffer is filled one chunk of output rows at a time, each at most this many elements (at least one
// output row). Returns the previous limit; tests shrink it to cross chunk boundaries.
int64_t set_im2col_chunk_elements(int64_t elements);

}  // namespace dcae::ops::cpu
