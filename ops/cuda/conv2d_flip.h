// The filter of a stride-1 convolution's input gradient written as a forward convolution: for groups == 1,
// dx = conv2d(dy, w') with padding kh - 1 - padding, where w'[i, r, s, o] = w[o, i, kh-1-r, kw-1-s] is the
// PyTorch-layout weight [O, I, kh, kw] transposed (input and output channels swap) and flipped in space, stored
// KRSC ([I, kh, kw, O]: the forward filter layout cuDNN reads). One pass over the weight.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

// weight: contiguous [O, I, kh, kw] on the GPU, any float dtype; returns [I, kh, kw, O] in the same dtype.
Tensor flipped_transposed_filter(const Tensor& weight);

}  // namespace dcae::ops::cuda
