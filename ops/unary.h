// Unary element-wise ops. Each has one forward and one fused backward (grad * f'(x)) kernel per device.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

enum class UnaryOp {
  relu, silu, gelu_tanh,
  gelu_erf,  // exact GELU x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's nn.GELU() default)
  sigmoid, tanh, exp, log, sqrt, rsqrt, abs, square, neg,
  pow,          // x^p0
  add_scalar,   // x + p0
  mul_scalar,   // x * p0
  rsub_scalar,  // p0 - x
  clamp,        // min(max(x, p0), p1)
  leaky_relu,   // x > 0 ? x : p0 * x
  sin, cos,     // (timestep and position embeddings)
};
const char* unary_name(UnaryOp op);

Tensor unary(UnaryOp op, const Tensor& x, double p0 = 0.0, double p1 = 0.0);
Tensor relu(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor gelu_tanh(const Tensor& x);
Tensor gelu_erf(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);  // gradient sign(x), 0 at 0
Tensor square(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.2);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);

}  // namespace dcae::ops
