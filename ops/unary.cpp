#include "ops/unary.h"

#include "core/autograd/record.h"
#include "ops/cpu/unary.h"
#include "ops/dispatch.h"

namespace dcae::ops {

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::relu: return "relu";
    case UnaryOp::silu: return "silu";
    case UnaryOp::gelu_tanh: return "gelu_tanh";
    case UnaryOp::gelu_erf: return "gelu_erf";
    case UnaryOp::sigmoid: return "sigmoid";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::rsqrt: return "rsqrt";
    case UnaryOp::abs: return "abs";
    case UnaryOp::square: return "square";
    case UnaryOp::neg: return "neg";
    case UnaryOp::pow: return "pow";
    case UnaryOp::add_scalar: return "add_scalar";
    case UnaryOp::mul_scalar: return "mul_scalar";
    case UnaryOp::rsub_scalar: return "rsub_scalar";
    case UnaryOp::clamp: return "clamp";
    case UnaryOp::leaky_relu: return "leaky_relu";
    case UnaryOp::sin: return "sin";
    case UnaryOp::cos: return "cos";
  }
  return "unary";
}

Tensor unary(UnaryOp op, const Tensor& x, double p0, double p1) {
  DCAE_CHECK(x.defined(), unary_name(op), ": undefined input");
  DCAE_CHECK(is_floating(x.dtype()), unary_name(op), " needs a floating tensor, got ", x.str());
  Tensor out = DCAE_KERNEL(x.device(), unary_forward, op, x, p0, p1);
  if (!autograd::needs_history({x})) return out;
  // Ops whose derivative ignores x save nothing.
  const bool needs_x = op != UnaryOp::neg && op != UnaryOp::add_scalar && op != UnaryOp::mul_scalar &&
                       op != UnaryOp::rsub_scalar;
  autograd::record(unary_name(op), {x}, {out},
                   [op, p0, p1, sx = needs_x ? autograd::SavedTensor(x) : autograd::SavedTensor(), shape = x.shape()](
                       const std::vector<Tensor>& grads, const autograd::Node&) {
                     const Tensor& g = grads[0];
                     const Tensor x = sx.defined() ? sx.get() : g;  // shape-only stand-in for x-free derivatives
                     return std::vector<Tensor>{DCAE_KERNEL(g.device(), unary_backward, op, g, x, p0, p1)};
                   });
  return out;
}

Tensor relu(const Tensor& x) { return unary(UnaryOp::relu, x); }
Tensor silu(const Tensor& x) { return unary(UnaryOp::silu, x); }
Tensor gelu_tanh(const Tensor& x) { return unary(UnaryOp::gelu_tanh, x); }
Tensor gelu_erf(const Tensor& x) { return unary(UnaryOp::gelu_erf, x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::tanh, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::rsqrt, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::abs, x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::square, x); }
Tensor pow(const Tensor& x, double exponent) { return unary(UnaryOp::pow, x, exponent); }
Tensor leaky_relu(const Tensor& x, double negative_slope) { return unary(UnaryOp::leaky_relu, x, negative_slope); }
Tensor sin(const Tensor& x) { return unary(UnaryOp::sin, x); }
Tensor cos(const Tensor& x) { return unary(UnaryOp::cos, x); }

}  // namespace dcae::ops
