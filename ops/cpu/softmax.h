#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// Softmax (log = false) or log-softmax (log = true) of `x` along `dim` (non-negative). Output dtype = input dtype.
Tensor softmax_forward(const Tensor& x, int64_t dim, bool log);
// Gradient w.r.t. the input from the gradient `grad` of the output and the forward output `out`, in one pass.
Tensor softmax_backward(const Tensor& grad, const Tensor& out, int64_t dim, bool log);

}  // namespace dcae::ops::cpu
