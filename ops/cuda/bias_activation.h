// y = act(y + bias[c]) in place over the last (channel) dim of a contiguous tensor, one pass with 16-byte accesses:
// the convolution epilogue for paths whose engine does not add the bias itself (conv2d.cpp), replacing a generic
// broadcast add (and a separate activation pass).
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

enum class BiasActivation { none, relu, silu };
void add_bias_activation_(const Tensor& y, const Tensor& bias, BiasActivation act);

}  // namespace dcae::ops::cuda
