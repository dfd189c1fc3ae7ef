#include "ops/cpu/glu.h"

#include <cmath>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

template <typename T>
T sigmoid_of(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

Shape half_shape(const Shape& shape) {
  Shape out = shape;
  out.back() /= 2;
  return out;
}

}  // namespace

Tensor silu_gate_forward(const Tensor& x_in) {
  const Tensor x = compute_input(x_in);
  const int64_t half = x.shape().back() / 2, rows = x.numel() / std::max<int64_t>(2 * half, 1);
  Tensor out = empty(half_shape(x.shape()), x.dtype());
  visit_float(x.dtype(), "silu_gate", [&]<typename T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    parallel_for(rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(half, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* a = px + r * 2 * half;
        const T* g = a + half;
        for (int64_t c = 0; c < half; ++c) po[r * half + c] = a[c] * (g[c] * sigmoid_of(g[c]));
      }
    });
  });
  return out.to(x_in.dtype());
}

Tensor silu_gate_backward(const Tensor& grad_in, const Tensor& x_in) {
  const Tensor x = compute_input(x_in);
  const Tensor dy = grad_in.to(x.dtype()).contiguous();
  const int64_t half = x.shape().back() / 2, rows = x.numel() / std::max<int64_t>(2 * half, 1);
  Tensor dx = empty(x.shape(), x.dtype());
  visit_float(x.dtype(), "silu_gate backward", [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pg = dy.data<T>();
    T* pd = dx.data<T>();
    parallel_for(rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(half, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* a = px + r * 2 * half;
        const T* g = a + half;
        T* da = pd + r * 2 * half;
        T* dg = da + half;
        for (int64_t c = 0; c < half; ++c) {
          const T d = pg[r * half + c], s = sigmoid_of(g[c]);
          da[c] = d * (g[c] * s);
          dg[c] = d * a[c] * (s * (T(1) + g[c] * (T(1) - s)));
        }
      }
    });
  });
  return dx.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
