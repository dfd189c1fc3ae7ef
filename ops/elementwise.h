// Element-wise ops with numpy broadcasting: binary arithmetic, scalar forms, where, clamp. Both operands of a
// binary op must have the same dtype and device (no silent promotion).
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

// Comparisons (ge, gt, le, lt, eq) give 1 or 0 in the operand dtype and carry no gradient.
enum class BinaryOp { add, sub, mul, div, maximum, minimum, ge, gt, le, lt, eq };

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // gradient goes to a where a >= b
Tensor minimum(const Tensor& a, const Tensor& b);  // gradient goes to a where a <= b

Tensor greater_equal(const Tensor& a, const Tensor& b);
Tensor greater(const Tensor& a, const Tensor& b);
Tensor less_equal(const Tensor& a, const Tensor& b);
Tensor less(const Tensor& a, const Tensor& b);
Tensor equal(const Tensor& a, const Tensor& b);

Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor neg(const Tensor& a);

// cond (bool or u8, broadcast) ? a : b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// Gradient passes where low <= x <= high.
Tensor clamp(const Tensor& x, double low, double high);

// Sums `t` down to `shape` (undoes broadcasting): the backward of every broadcasting op.
Tensor sum_to(const Tensor& t, const Shape& shape);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return div(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

}  // namespace dcae::ops
