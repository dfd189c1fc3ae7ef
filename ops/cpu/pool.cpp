#include "ops/cpu/pool.h"

#include <limits>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

Tensor max_pool2d_forward(const Tensor& x_in, int64_t kernel, int64_t stride, Tensor& argmax) {
  const Tensor x = compute_input(x_in);
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  const int64_t ho = (h - kernel) / stride + 1, wo = (w - kernel) / stride + 1;
  Tensor out = empty({n, ho, wo, c}, x.dtype());
  argmax = empty({n, ho, wo, c}, DType::i64);
  visit_float(x.dtype(), "max_pool2d", [&]<typename T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    int64_t* pa = argmax.data<int64_t>();
    parallel_for(n * ho, 4, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / ho, oy = row % ho;
        for (int64_t ox = 0; ox < wo; ++ox) {
          T* best = po + (row * wo + ox) * c;
          int64_t* where = pa + (row * wo + ox) * c;
          for (int64_t ch = 0; ch < c; ++ch) best[ch] = -std::numeric_limits<T>::infinity(), where[ch] = -1;
          for (int64_t ky = 0; ky < kernel; ++ky)
            for (int64_t kx = 0; kx < kernel; ++kx) {
              const int64_t iy = oy * stride + ky, ix = ox * stride + kx;
              const T* in = px + ((b * h + iy) * w + ix) * c;
              for (int64_t ch = 0; ch < c; ++ch)
                if (in[ch] > best[ch] || where[ch] < 0) best[ch] = in[ch], where[ch] = iy * w + ix;
            }
        }
      }
    });
  });
  return out.to(x_in.dtype());
}

Tensor max_pool2d_backward(const Tensor& grad_in, const Tensor& argmax, const Shape& shape) {
  const Tensor g = compute_input(grad_in);
  const int64_t n = shape[0], hw = shape[1] * shape[2], c = shape[3];
  const int64_t out_hw = g.size(1) * g.size(2);
  Tensor out = zeros(shape, g.dtype());
  const Tensor idx = argmax.contiguous();
  visit_float(g.dtype(), "max_pool2d backward", [&]<typename T>() {
    const T* pg = g.data<T>();
    const int64_t* pa = idx.data<int64_t>();
    T* po = out.data<T>();
    // One sample per task: windows may overlap, so writes within a sample stay on one thread.
    parallel_for(n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        for (int64_t o = 0; o < out_hw; ++o)
          for (int64_t ch = 0; ch < c; ++ch) {
            const int64_t flat = (b * out_hw + o) * c + ch;
            po[(b * hw + pa[flat]) * c + ch] += pg[flat];
          }
    });
  });
  return out.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
