// 2-D convolution on NHWC activations with PyTorch-layout weights.
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::ops {

// Square stride and zero padding, applied to both spatial axes; groups split input and output channels into
// `groups` independent slices.
struct Conv2dParams {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t groups = 1;
};

// Output length of one spatial axis: (in + 2 * padding - kernel) / stride + 1.
int64_t conv2d_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding);

// x [N, H, W, Cin] (NHWC), weight [Cout, Cin / groups, kh, kw], bias [Cout] or undefined
// -> [N, Ho, Wo, Cout]. Any kernel size (odd or even, kh != kw allowed). Cross-correlation, as in PyTorch.
// Gradients flow to x, weight and bias.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Conv2dParams params = {});

}  // namespace dcae::ops
