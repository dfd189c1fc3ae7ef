// Element-wise kernels of layer 0 for tensors on one GPU, queued on the current stream of that GPU.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::cuda {

// dst[i] = src[i] converted to dst's dtype (any dtype pair, any strides, src may be an expanded view).
// dst and src are on the same GPU and have the same shape.
void copy_on_device(const Tensor& dst, const Tensor& src);
// Every element of dst (any layout) set to `value` rounded to dst's dtype.
void fill_on_device(const Tensor& dst, double value);
// dst += alpha * src computed in double and rounded once, like the CPU; src has dst's shape (expand it first).
void add_on_device(const Tensor& dst, const Tensor& src, double alpha);

}  // namespace dcae::cuda
