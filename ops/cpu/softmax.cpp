#include "ops/cpu/softmax.h"

#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

// A contiguous tensor seen as [outer, n, inner] with the softmax dim in the middle. Rows (one per (outer, inner)
// pair) are handled in blocks of up to kLanes adjacent inner positions, so the innermost loops run over
// contiguous memory whatever the dim is.
struct RowLayout {
  int64_t outer = 1, n = 1, inner = 1;
  RowLayout(const Shape& shape, int64_t dim) {
    for (int64_t d = 0; d < dim; ++d) outer *= shape[d];
    n = shape[dim];
    for (int64_t d = dim + 1; d < static_cast<int64_t>(shape.size()); ++d) inner *= shape[d];
  }
};

constexpr int64_t kLanes = 256;

// Calls block(base, lanes) for every block of rows: element j of lane l is at base + j * inner + l.
template <typename Block>
void for_each_row_block(const RowLayout& layout, Block&& block) {
  const int64_t blocks_per_outer = (layout.inner + kLanes - 1) / kLanes;
  const int64_t work = layout.outer * blocks_per_outer;
  const int64_t grain =
      std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(layout.n * std::min(layout.inner, kLanes), 1));
  parallel_for(work, grain, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t o = w / blocks_per_outer, first = (w % blocks_per_outer) * kLanes;
      block(o * layout.n * layout.inner + first, std::min(kLanes, layout.inner - first));
    }
  });
}

}  // namespace

Tensor softmax_forward(const Tensor& x_in, int64_t dim, bool log) {
  const Tensor x = compute_input(x_in);
  Tensor out = empty(x.shape(), x.dtype());
  const RowLayout layout(x.shape(), dim);
  if (x.numel() == 0) return out.to(x_in.dtype());
  visit_float(x.dtype(), log ? "log_softmax" : "softmax", [&]<typename T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t n = layout.n, stride = layout.inner;
    for_each_row_block(layout, [&](int64_t base, int64_t lanes) {
      std::vector<T> row_max(lanes, -std::numeric_limits<T>::infinity());
      std::vector<double> row_sum(lanes, 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const T* xr = px + base + j * stride;
        for (int64_t l = 0; l < lanes; ++l) row_max[l] = std::max(row_max[l], xr[l]);
      }
      // A NaN never becomes the max, but it turns the row sum into NaN, so the whole row comes out NaN.
      for (int64_t j = 0; j < n; ++j) {
        const T* xr = px + base + j * stride;
        T* orow = po + base + j * stride;
        for (int64_t l = 0; l < lanes; ++l) {
          const T shifted = xr[l] - row_max[l];
          const T e = std::exp(shifted);
          row_sum[l] += e;
          orow[l] = log ? shifted : e;
        }
      }
      for (int64_t l = 0; l < lanes; ++l) row_sum[l] = log ? std::log(row_sum[l]) : 1.0 / row_sum[l];
      for (int64_t j = 0; j < n; ++j) {
        T* orow = po + base + j * stride;
        for (int64_t l = 0; l < lanes; ++l)
          orow[l] = log ? orow[l] - static_cast<T>(row_sum[l]) : orow[l] * static_cast<T>(row_sum[l]);
      }
    });
  });
  return out.to(x_in.dtype());
}

Tensor softmax_backward(const Tensor& grad_in, const Tensor& out_in, int64_t dim, bool log) {
  const Tensor y = compute_input(out_in);
  const Tensor g = grad_in.to(y.dtype()).contiguous();
  Tensor dx = empty(y.shape(), y.dtype());
  const RowLayout layout(y.shape(), dim);
  if (y.numel() == 0) return dx.to(grad_in.dtype());
  visit_float(y.dtype(), log ? "log_softmax backward" : "softmax backward", [&]<typename T>() {
    const T* py = y.data<T>();
    const T* pg = g.data<T>();
    T* pd = dx.data<T>();
    const int64_t n = layout.n, stride = layout.inner;
    for_each_row_block(layout, [&](int64_t base, int64_t lanes) {
      // softmax: sum(g * y); log_softmax: sum(g).
      std::vector<double> row_dot(lanes, 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t at = base + j * stride;
        for (int64_t l = 0; l < lanes; ++l) row_dot[l] += log ? pg[at + l] : pg[at + l] * py[at + l];
      }
      for (int64_t j = 0; j < n; ++j) {
        const int64_t at = base + j * stride;
        for (int64_t l = 0; l < lanes; ++l) {
          const T dot = static_cast<T>(row_dot[l]);
          pd[at + l] = log ? pg[at + l] - std::exp(py[at + l]) * dot : py[at + l] * (pg[at + l] - dot);
        }
      }
    });
  });
  return dx.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
