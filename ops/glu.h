// Gated activations: the GLU step of DC-AE's GLUMBConv (spec 4.2.2) as one fused op.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

// x [..., 2M] (channels last) -> [..., M]: out = a * silu(g) with a = x[..., :M] (the first half of the channels)
// and g = x[..., M:], silu(g) = g * sigmoid(g). bf16/f16 compute in fp32; the output has x's dtype. One forward and
// one backward kernel (dx = [dy * silu(g), dy * a * silu'(g)]) instead of a split, a SiLU and a product.
Tensor silu_gate(const Tensor& x);

}  // namespace dcae::ops
