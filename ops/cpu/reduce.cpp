#include "ops/cpu/reduce.h"

#include <algorithm>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

// Moves `dims` to the end: returns the permutation.
std::vector<int64_t> reduced_last(int64_t rank, const std::vector<int64_t>& dims) {
  std::vector<int64_t> order;
  for (int64_t d = 0; d < rank; ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) order.push_back(d);
  order.insert(order.end(), dims.begin(), dims.end());
  return order;
}

Shape kept_shape(const Shape& shape, const std::vector<int64_t>& dims) {
  Shape out = shape;
  for (int64_t d : dims) out[d] = 1;
  return out;
}

}  // namespace

Tensor sum_forward(const Tensor& x_in, const std::vector<int64_t>& dims) {
  const Shape out_shape = kept_shape(x_in.shape(), dims);
  const int64_t outer = shape_numel(out_shape);
  const int64_t inner = outer == 0 ? 0 : x_in.numel() / std::max<int64_t>(outer, 1);
  Tensor out = empty(out_shape, compute_dtype(x_in.dtype()));
  visit_float(out.dtype(), "sum", [&]<typename T>() {
    T* po = out.data<T>();
    // Leading dims reduced, trailing kept (bias gradients): accumulate whole rows, no transpose.
    bool prefix = true;
    for (size_t i = 0; i < dims.size(); ++i) prefix = prefix && dims[i] == static_cast<int64_t>(i);
    const Tensor x = x_in.to(out.dtype()).contiguous();
    const T* px = x.data<T>();
    if (prefix && !dims.empty()) {
      parallel_for(outer, 64, [&](int64_t begin, int64_t end) {
        std::vector<double> acc(end - begin, 0.0);
        for (int64_t r = 0; r < inner; ++r) {
          const T* row = px + r * outer;
          for (int64_t c = begin; c < end; ++c) acc[c - begin] += row[c];
        }
        for (int64_t c = begin; c < end; ++c) po[c] = static_cast<T>(acc[c - begin]);
      });
      return;
    }
    const Tensor xp = x.permute(reduced_last(x.dim(), dims)).contiguous();
    const T* pp = xp.data<T>();
    parallel_for(outer, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(inner, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        double acc = 0.0;
        const T* row = pp + o * inner;
        for (int64_t i = 0; i < inner; ++i) acc += row[i];
        po[o] = static_cast<T>(acc);
      }
    });
  });
  return out.to(x_in.dtype());
}

Tensor max_forward(const Tensor& x_in, int64_t dim, Tensor& indices) {
  const Tensor x = compute_input(x_in);
  const Shape out_shape = kept_shape(x.shape(), {dim});
  const int64_t n = x.shape()[dim];
  DCAE_CHECK(n > 0, "max over an empty dim of ", x_in.str());
  Tensor out = empty(out_shape, x.dtype());
  indices = empty(out_shape, DType::i64);
  const Tensor xp = x.permute(reduced_last(x.dim(), {dim})).contiguous();
  visit_float(x.dtype(), "max", [&]<typename T>() {
    const T* px = xp.data<T>();
    T* po = out.data<T>();
    int64_t* pi = indices.data<int64_t>();
    parallel_for(out.numel(), 256, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* row = px + o * n;
        int64_t best = 0;
        for (int64_t i = 1; i < n; ++i)
          if (row[i] > row[best] || (row[i] != row[i] && row[best] == row[best])) best = i;  // NaN wins
        po[o] = row[best];
        pi[o] = best;
      }
    });
  });
  return out.to(x_in.dtype());
}

Tensor max_backward(const Tensor& grad_in, const Tensor& indices, const Shape& shape, int64_t dim) {
  const Tensor g = compute_input(grad_in);
  Tensor out = zeros(shape, g.dtype());
  // Work in the layout with `dim` last, then permute back.
  const std::vector<int64_t> order = reduced_last(static_cast<int64_t>(shape.size()), {dim});
  Shape permuted(shape.size());
  for (size_t i = 0; i < order.size(); ++i) permuted[i] = shape[order[i]];
  Tensor work = zeros(permuted, g.dtype());
  const int64_t n = shape[dim];
  const Tensor gp = g.permute(order).contiguous();
  const Tensor ip = indices.permute(order).contiguous();
  visit_float(g.dtype(), "max backward", [&]<typename T>() {
    const T* pg = gp.data<T>();
    const int64_t* pi = ip.data<int64_t>();
    T* pw = work.data<T>();
    for (int64_t o = 0; o < gp.numel(); ++o) pw[o * n + pi[o]] = pg[o];
  });
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = static_cast<int64_t>(i);
  out.copy_(work.permute(inverse));
  return out.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
