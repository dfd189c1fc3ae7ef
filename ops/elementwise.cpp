#include "ops/elementwise.h"

#include "core/autograd/record.h"
#include "ops/cpu/elementwise.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::ops {

using autograd::Node;
using autograd::SavedTensor;

namespace {

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
    case BinaryOp::maximum: return "maximum";
    case BinaryOp::minimum: return "minimum";
    case BinaryOp::ge: return "greater_equal";
    case BinaryOp::gt: return "greater";
    case BinaryOp::le: return "less_equal";
    case BinaryOp::lt: return "less";
    case BinaryOp::eq: return "equal";
  }
  return "binary";
}

bool is_comparison(BinaryOp op) { return op >= BinaryOp::ge; }

}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  DCAE_CHECK(a.defined() && b.defined(), name, ": undefined operand");
  DCAE_CHECK(a.dtype() == b.dtype(), name, ": operands have different dtypes: ", a.str(), " and ", b.str());
  DCAE_CHECK(a.device() == b.device(), name, ": operands are on different devices: ", a.str(), " and ", b.str());
  Tensor out = DCAE_KERNEL(a.device(), binary_forward, op, a, b);
  if (is_comparison(op) || !autograd::needs_history({a, b})) return out;

  const bool keep_a = op != BinaryOp::add && op != BinaryOp::sub;
  autograd::record(name, {a, b}, {out},
                   [op, sa = keep_a ? SavedTensor(a) : SavedTensor(), sb = keep_a ? SavedTensor(b) : SavedTensor(),
                    shape_a = a.shape(), shape_b = b.shape()](const std::vector<Tensor>& grads, const Node& node) {
                     const Tensor& g = grads[0];
                     Tensor ga, gb;
                     switch (op) {
                       case BinaryOp::add: ga = g; gb = g; break;
                       case BinaryOp::sub: ga = g; if (node.needs_input_grad(1)) gb = neg(g); break;
                       case BinaryOp::mul:
                         if (node.needs_input_grad(0)) ga = mul(g, sb.get());
                         if (node.needs_input_grad(1)) gb = mul(g, sa.get());
                         break;
                       case BinaryOp::div: {
                         const Tensor b = sb.get();
                         if (node.needs_input_grad(0)) ga = div(g, b);
                         if (node.needs_input_grad(1)) gb = neg(div(mul(g, sa.get()), mul(b, b)));
                         break;
                       }
                       case BinaryOp::maximum:
                       case BinaryOp::minimum: {
                         const Tensor to_a = op == BinaryOp::maximum ? greater_equal(sa.get(), sb.get())
                                                                     : less_equal(sa.get(), sb.get());
                         const Tensor ga_full = mul(g, to_a);
                         ga = ga_full;
                         if (node.needs_input_grad(1)) gb = sub(g, ga_full);
                         break;
                       }
                       default: break;
                     }
                     if (ga.defined()) ga = sum_to(ga, shape_a);
                     if (gb.defined()) gb = sum_to(gb, shape_b);
                     return std::vector<Tensor>{ga, gb};
                   });
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::minimum, a, b); }
Tensor greater_equal(const Tensor& a, const Tensor& b) { return binary(BinaryOp::ge, a, b); }
Tensor greater(const Tensor& a, const Tensor& b) { return binary(BinaryOp::gt, a, b); }
Tensor less_equal(const Tensor& a, const Tensor& b) { return binary(BinaryOp::le, a, b); }
Tensor less(const Tensor& a, const Tensor& b) { return binary(BinaryOp::lt, a, b); }
Tensor equal(const Tensor& a, const Tensor& b) { return binary(BinaryOp::eq, a, b); }

Tensor add(const Tensor& a, double s) { return unary(UnaryOp::add_scalar, a, s); }
Tensor sub(const Tensor& a, double s) { return unary(UnaryOp::add_scalar, a, -s); }
Tensor mul(const Tensor& a, double s) { return unary(UnaryOp::mul_scalar, a, s); }
Tensor div(const Tensor& a, double s) { return unary(UnaryOp::mul_scalar, a, 1.0 / s); }
Tensor rsub(double s, const Tensor& a) { return unary(UnaryOp::rsub_scalar, a, s); }
Tensor neg(const Tensor& a) { return unary(UnaryOp::neg, a); }
Tensor clamp(const Tensor& x, double low, double high) {
  DCAE_CHECK(low <= high, "clamp needs low <= high, got [", low, ", ", high, "]");
  return unary(UnaryOp::clamp, x, low, high);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  DCAE_CHECK(a.dtype() == b.dtype(), "where: branches have different dtypes: ", a.str(), " and ", b.str());
  DCAE_CHECK(cond.device() == a.device() && a.device() == b.device(), "where: operands on different devices: ",
             cond.str(), ", ", a.str(), ", ", b.str());
  Tensor out = DCAE_KERNEL(a.device(), where_forward, cond, a, b);
  if (!autograd::needs_history({a, b})) return out;
  autograd::record("where", {a, b}, {out},
                   [sc = SavedTensor(cond), shape_a = a.shape(), shape_b = b.shape()](
                       const std::vector<Tensor>& grads, const Node& node) {
                     const Tensor& g = grads[0];
                     const Tensor zero = zeros({}, g.dtype(), g.device());
                     const Tensor c = sc.get();
                     Tensor ga, gb;
                     if (node.needs_input_grad(0)) ga = sum_to(where(c, g, zero), shape_a);
                     if (node.needs_input_grad(1)) gb = sum_to(where(c, zero, g), shape_b);
                     return std::vector<Tensor>{ga, gb};
                   });
  return out;
}

Tensor sum_to(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  DCAE_CHECK(broadcast_shapes(t.shape(), shape) == t.shape(), "sum_to: ", shape_str(shape),
             " does not broadcast to ", t.str());
  const int64_t lead = t.dim() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (d < lead || (shape[d - lead] == 1 && t.size(d) != 1)) dims.push_back(d);
  Tensor reduced = dims.empty() ? t : sum(t, dims, /*keepdim=*/true);
  return reduced.shape() == shape ? reduced : reshape(reduced, shape);
}

}  // namespace dcae::ops
