#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// x [..., 2M] -> x[..., :M] * silu(x[..., M:]), in x's dtype.
Tensor silu_gate_forward(const Tensor& x);
// dx [..., 2M] from dy [..., M]: [dy * silu(g), dy * a * silu'(g)], in dy's dtype.
Tensor silu_gate_backward(const Tensor& grad, const Tensor& x);

}  // namespace dcae::ops::cpu
