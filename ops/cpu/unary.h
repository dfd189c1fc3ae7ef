#pragma once
#include "ops/unary.h"

namespace dcae::ops::cpu {

Tensor unary_forward(UnaryOp op, const Tensor& x, double p0, double p1);
// grad * f'(x), in one pass.
Tensor unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, double p0, double p1);

}  // namespace dcae::ops::cpu
