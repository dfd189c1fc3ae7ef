// Softmax and log-softmax along one dim, numerically stable (the row maximum is subtracted before exp). Each has
// one fused forward and one fused backward kernel; bf16/f16 inputs are computed in fp32 and rounded back.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

// exp(x - max) / sum(exp(x - max)) along `dim` (negative dims count from the end). Backward reads the output:
// dx = y * (g - sum(g * y)).
Tensor softmax(const Tensor& x, int64_t dim);
// x - max - log(sum(exp(x - max))) along `dim`. Backward reads the output: dx = g - exp(y) * sum(g).
Tensor log_softmax(const Tensor& x, int64_t dim);

}  // namespace dcae::ops
