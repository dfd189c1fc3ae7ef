#include "ops/matmul.h"

#include <algorithm>

#include "core/autograd/record.h"
#include "ops/cpu/matmul.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/view.h"

namespace dcae::ops {

using autograd::Node;
using autograd::SavedTensor;

namespace {

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  DCAE_CHECK(a.defined() && b.defined(), op, ": undefined operand (", a.str(), ", ", b.str(), ")");
  DCAE_CHECK(is_floating(a.dtype()), op, " needs floating operands, got ", a.str(), " and ", b.str());
  DCAE_CHECK(a.dtype() == b.dtype(), op, ": operands have different dtypes: ", a.str(), " and ", b.str());
  DCAE_CHECK(a.device() == b.device(), op, ": operands are on different devices: ", a.str(), " and ", b.str());
}

Shape batch_dims(const Shape& shape) { return Shape(shape.begin(), shape.end() - 2); }

bool broadcastable(const Shape& a, const Shape& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const int64_t x = a[a.size() - 1 - i], y = b[b.size() - 1 - i];
    if (x != y && x != 1 && y != 1) return false;
  }
  return true;
}

const char* transposed_note(bool transposed) { return transposed ? " (transposed)" : ""; }

// For out = op_a(a) op_b(b) and its gradient g: d op_a(a) = g op_b(b)^T and d op_b(b) = op_a(a)^T g, written back
// in each operand's stored layout (before batch reduction).
Tensor grad_of_a(const Tensor& g, const Tensor& b, bool transpose_a, bool transpose_b) {
  return transpose_a ? matmul(b, g, transpose_b, true) : matmul(g, b, false, !transpose_b);
}

Tensor grad_of_b(const Tensor& g, const Tensor& a, bool transpose_a, bool transpose_b, const Shape& shape_b) {
  if (shape_b.size() == 2 && a.dim() > 2 && !transpose_a) {
    // b was shared by the whole batch: fold the batch into rows so the reduction happens inside one GEMM.
    const Tensor a_rows = a.reshape({-1, a.size(-1)}), g_rows = g.reshape({-1, g.size(-1)});
    return transpose_b ? matmul(g_rows, a_rows, true, false) : matmul(a_rows, g_rows, true, false);
  }
  return transpose_b ? matmul(g, a, true, transpose_a) : matmul(a, g, !transpose_a, false);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  check_pair("matmul", a, b);
  DCAE_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul needs operands with at least 2 dims, got ", a.str(), " and ",
             b.str());
  const int64_t k_a = transpose_a ? a.size(-2) : a.size(-1);
  const int64_t k_b = transpose_b ? b.size(-1) : b.size(-2);
  DCAE_CHECK(k_a == k_b, "matmul: inner dims differ: a ", a.str(), transposed_note(transpose_a), " has K = ", k_a,
             ", b ", b.str(), transposed_note(transpose_b), " has K = ", k_b);
  DCAE_CHECK(broadcastable(batch_dims(a.shape()), batch_dims(b.shape())), "matmul: batch dims ",
             shape_str(batch_dims(a.shape())), " of ", a.str(), " and ", shape_str(batch_dims(b.shape())), " of ",
             b.str(), " do not broadcast");
  Tensor out = DCAE_KERNEL(a.device(), matmul_forward, a, b, transpose_a, transpose_b);
  if (!autograd::needs_history({a, b})) return out;
  // Each gradient reads only the other operand.
  const bool a_wants = autograd::needs_history({a}), b_wants = autograd::needs_history({b});
  autograd::record("matmul", {a, b}, {out},
                   [sa = b_wants ? SavedTensor(a) : SavedTensor(), sb = a_wants ? SavedTensor(b) : SavedTensor(),
                    transpose_a, transpose_b, shape_a = a.shape(),
                    shape_b = b.shape()](const std::vector<Tensor>& grads, const Node& node) {
                     const Tensor& g = grads[0];
                     Tensor ga, gb;
                     if (node.needs_input_grad(0))
                       ga = sum_to(grad_of_a(g, sb.get(), transpose_a, transpose_b), shape_a);
                     if (node.needs_input_grad(1))
                       gb = sum_to(grad_of_b(g, sa.get(), transpose_a, transpose_b, shape_b), shape_b);
                     return std::vector<Tensor>{ga, gb};
                   });
  return out;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  check_pair("bmm", a, b);
  DCAE_CHECK(a.dim() == 3 && b.dim() == 3, "bmm needs 3-D operands [B, M, K] and [B, K, N], got ", a.str(), " and ",
             b.str());
  DCAE_CHECK(a.size(0) == b.size(0), "bmm: batch sizes differ: ", a.str(), " and ", b.str());
  DCAE_CHECK(a.size(2) == b.size(1), "bmm: inner dims differ: ", a.str(), " and ", b.str());
  return matmul(a, b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_pair("linear", x, weight);
  DCAE_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got ", weight.str());
  DCAE_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input ", x.str(), " must end in ",
             weight.size(1), " features to match weight ", weight.str());
  if (bias.defined()) {
    DCAE_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias ", bias.str(), " must be [",
               weight.size(0), "] for weight ", weight.str());
    DCAE_CHECK(bias.dtype() == x.dtype() && bias.device() == x.device(), "linear: bias ", bias.str(),
               " must match input ", x.str(), " in dtype and device");
  }
  if (x.dim() == 1) return squeeze(linear(unsqueeze(x, 0), weight, bias), 0);
  if (!bias.defined()) return matmul(x, weight, false, true);
  // With a bias, one kernel adds it in the GEMM's epilogue (cuBLASLt) instead of a second pass over the output.
  Tensor out = DCAE_KERNEL(x.device(), linear_forward, x, weight, bias);
  if (!autograd::needs_history({x, weight, bias})) return out;
  const bool x_wants = autograd::needs_history({x}), weight_wants = autograd::needs_history({weight});
  autograd::record("linear", {x, weight, bias}, {out},
                   [sx = weight_wants ? SavedTensor(x) : SavedTensor(),
                    sw = x_wants ? SavedTensor(weight) : SavedTensor()](const std::vector<Tensor>& grads,
                                                                        const Node& node) {
                     const Tensor& g = grads[0];
                     Tensor gx, gw, gb;
                     if (node.needs_input_grad(0)) gx = matmul(g, sw.get());
                     if (node.needs_input_grad(1)) {
                       // Rows of every batch entry together: the batch reduction happens inside one GEMM.
                       const Tensor x_rows = sx.get().reshape({-1, sx.get().size(-1)});
                       gw = matmul(g.reshape({-1, g.size(-1)}), x_rows, true, false);
                     }
                     if (node.needs_input_grad(2)) {
                       std::vector<int64_t> leading(g.dim() - 1);
                       for (int64_t d = 0; d + 1 < g.dim(); ++d) leading[d] = d;
                       gb = sum(g, leading);
                     }
                     return std::vector<Tensor>{gx, gw, gb};
                   });
  return out;
}

}  // namespace dcae::ops
