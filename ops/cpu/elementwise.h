#pragma once
#include "ops/elementwise.h"

namespace dcae::ops::cpu {

Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor where_forward(const Tensor& cond, const Tensor& a, const Tensor& b);

}  // namespace dcae::ops::cpu
