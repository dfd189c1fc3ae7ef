#include "ops/view.h"

#include "core/autograd/record.h"
#include "ops/elementwise.h"

namespace dcae::ops {

using autograd::Node;

namespace {

// Records a view whose backward is `back(grad)`.
template <typename Back>
Tensor record_view(const char* name, const Tensor& x, Tensor out, Back back) {
  if (!autograd::needs_history({x})) return out;
  autograd::record(name, {x}, {out}, [back](const std::vector<Tensor>& grads, const Node&) {
    return std::vector<Tensor>{back(grads[0])};
  });
  return out;
}

// Gradient of a sub-view: zeros of the source shape with the gradient written into the same window.
template <typename Window>
Tensor scatter_into_zeros(const Tensor& grad, const Shape& shape, Window window) {
  Tensor full = zeros(shape, grad.dtype(), grad.device());
  Tensor target = window(full);
  target.copy_(grad);
  return full;
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  return record_view("reshape", x, x.reshape(shape), [in = x.shape()](const Tensor& g) { return g.reshape(in); });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  Tensor out = x.permute(order);
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) inverse[normalize_dim(order[i], x.dim())] = static_cast<int64_t>(i);
  return record_view("permute", x, out, [inverse](const Tensor& g) { return g.permute(inverse); });
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  return record_view("transpose", x, x.transpose(dim0, dim1),
                     [dim0, dim1](const Tensor& g) { return g.transpose(dim0, dim1); });
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  return record_view("narrow", x, x.narrow(dim, start, length), [=, in = x.shape()](const Tensor& g) {
    return scatter_into_zeros(g, in, [&](const Tensor& full) { return full.narrow(dim, start, length); });
  });
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  return record_view("slice", x, x.slice(dim, start, end, step), [=, in = x.shape()](const Tensor& g) {
    return scatter_into_zeros(g, in, [&](const Tensor& full) { return full.slice(dim, start, end, step); });
  });
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  return record_view("select", x, x.select(dim, index), [=, in = x.shape()](const Tensor& g) {
    return scatter_into_zeros(g, in, [&](const Tensor& full) { return full.select(dim, index); });
  });
}

Tensor expand(const Tensor& x, const Shape& shape) {
  return record_view("expand", x, x.expand(shape), [in = x.shape()](const Tensor& g) { return sum_to(g, in); });
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  return record_view("unsqueeze", x, x.unsqueeze(dim), [in = x.shape()](const Tensor& g) { return g.reshape(in); });
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  return record_view("squeeze", x, x.squeeze(dim), [in = x.shape()](const Tensor& g) { return g.reshape(in); });
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  start_dim = normalize_dim(start_dim, x.dim());
  end_dim = normalize_dim(end_dim, x.dim());
  DCAE_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " > end_dim ", end_dim);
  Shape shape(x.shape().begin(), x.shape().begin() + start_dim);
  int64_t merged = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) merged *= x.size(d);
  shape.push_back(merged);
  shape.insert(shape.end(), x.shape().begin() + end_dim + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return record_view("contiguous", x, x.contiguous(), [](const Tensor& g) { return g; });
}

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  DCAE_CHECK(!autograd::needs_history({x}) || is_floating(dtype), "cast of ", x.str(), " to ", dtype,
             " would drop its gradient (only float casts are differentiable)");
  return record_view("cast", x, x.to(dtype), [from = x.dtype()](const Tensor& g) { return g.to(from); });
}

}  // namespace dcae::ops
