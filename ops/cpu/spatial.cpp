#include "ops/cpu/spatial.h"

#include <algorithm>
#include <vector>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

// Rows per parallel chunk so that one chunk moves about 16K elements.
int64_t row_grain(int64_t elements_per_row) {
  return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(elements_per_row, 1));
}

}  // namespace

Tensor pixel_unshuffle_forward(const Tensor& x_in, int64_t r) {
  const Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = H / r, Wo = W / r, Co = C * r * r;
  Tensor out = empty({N, Ho, Wo, Co}, x.dtype(), x.device());
  visit_dtype(x.dtype(), [&]<typename T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    // One output row (n, ho) gathers input rows n*H + ho*r + i = row*r + i, each read front to back.
    parallel_for(N * Ho, row_grain(Wo * Co), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        T* out_row = dst + row * Wo * Co;
        for (int64_t i = 0; i < r; ++i) {
          const T* in_row = src + (row * r + i) * W * C;
          for (int64_t wi = 0; wi < W; ++wi) {
            const int64_t w = wi / r, j = wi % r;
            const T* in_pixel = in_row + wi * C;
            T* out_slot = out_row + w * Co + i * r + j;  // channel c lands at c*r*r + i*r + j
            for (int64_t c = 0; c < C; ++c) out_slot[c * r * r] = in_pixel[c];
          }
        }
      }
    });
  });
  return out;
}

Tensor pixel_shuffle_forward(const Tensor& x_in, int64_t r) {
  const Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = H * r, Wo = W * r, Co = C / (r * r);
  Tensor out = empty({N, Ho, Wo, Co}, x.dtype(), x.device());
  visit_dtype(x.dtype(), [&]<typename T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    // Output row (n, h*r + i) = row reads input row n*H + h = row / r, row offset i = row % r.
    parallel_for(N * Ho, row_grain(Wo * Co), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const T* in_row = src + (row / r) * W * C;
        const int64_t i = row % r;
        T* out_row = dst + row * Wo * Co;
        for (int64_t wo = 0; wo < Wo; ++wo) {
          const int64_t w = wo / r, j = wo % r;
          const T* in_slot = in_row + w * C + i * r + j;
          T* out_pixel = out_row + wo * Co;
          for (int64_t c = 0; c < Co; ++c) out_pixel[c] = in_slot[c * r * r];
        }
      }
    });
  });
  return out;
}

Tensor channel_group_sum_forward(const Tensor& x_in, int64_t out_channels, double scale) {
  const Tensor x = compute_input(x_in);
  const int64_t C = x.shape().back(), group = C / out_channels;
  const int64_t pixels = C == 0 ? 0 : x.numel() / C;
  Shape out_shape = x.shape();
  out_shape.back() = out_channels;
  Tensor out = empty(out_shape, x.dtype(), x.device());
  visit_float(x.dtype(), "channel_average", [&]<typename T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    parallel_for(pixels, row_grain(C), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* in_pixel = src + p * C;
        T* out_pixel = dst + p * out_channels;
        for (int64_t o = 0; o < out_channels; ++o) {
          double acc = 0.0;
          for (int64_t k = 0; k < group; ++k) acc += in_pixel[o * group + k];
          out_pixel[o] = static_cast<T>(acc * scale);
        }
      }
    });
  });
  return out.to(x_in.dtype());
}

Tensor channel_repeat_forward(const Tensor& x_in, int64_t out_channels, double scale) {
  const Tensor x = compute_input(x_in);
  const int64_t C = x.shape().back(), repeats = out_channels / C;
  const int64_t pixels = C == 0 ? 0 : x.numel() / C;
  Shape out_shape = x.shape();
  out_shape.back() = out_channels;
  Tensor out = empty(out_shape, x.dtype(), x.device());
  visit_float(x.dtype(), "channel_repeat_interleave", [&]<typename T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    const T factor = static_cast<T>(scale);
    parallel_for(pixels, row_grain(out_channels), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* in_pixel = src + p * C;
        T* out_pixel = dst + p * out_channels;
        for (int64_t m = 0; m < out_channels; ++m) out_pixel[m] = factor * in_pixel[m / repeats];
      }
    });
  });
  return out.to(x_in.dtype());
}

Tensor upsample_nearest_forward(const Tensor& x_in, int64_t s) {
  const Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = H * s, Wo = W * s;
  Tensor out = empty({N, Ho, Wo, C}, x.dtype(), x.device());
  visit_dtype(x.dtype(), [&]<typename T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    parallel_for(N * Ho, row_grain(Wo * C), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const T* in_row = src + (row / s) * W * C;  // output row (n, h*s + i) reads input row n*H + h
        T* out_row = dst + row * Wo * C;
        for (int64_t wo = 0; wo < Wo; ++wo) std::copy_n(in_row + (wo / s) * C, C, out_row + wo * C);
      }
    });
  });
  return out;
}

Tensor upsample_nearest_backward(const Tensor& grad_in, int64_t s) {
  const Tensor g = compute_input(grad_in);
  const int64_t N = g.size(0), Ho = g.size(1), Wo = g.size(2), C = g.size(3);
  const int64_t H = Ho / s, W = Wo / s;
  Tensor out = empty({N, H, W, C}, g.dtype(), g.device());
  visit_float(g.dtype(), "upsample_nearest backward", [&]<typename T>() {
    const T* src = g.data<T>();
    T* dst = out.data<T>();
    parallel_for(N * H, row_grain(Wo * C * s), [&](int64_t begin, int64_t end) {
      std::vector<double> acc(W * C);
      for (int64_t row = begin; row < end; ++row) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t i = 0; i < s; ++i) {
          const T* grad_row = src + (row * s + i) * Wo * C;
          for (int64_t wo = 0; wo < Wo; ++wo) {
            double* sum = acc.data() + (wo / s) * C;
            const T* grad_pixel = grad_row + wo * C;
            for (int64_t c = 0; c < C; ++c) sum[c] += grad_pixel[c];
          }
        }
        T* out_row = dst + row * W * C;
        for (int64_t k = 0; k < W * C; ++k) out_row[k] = static_cast<T>(acc[k]);
      }
    });
  });
  return out.to(grad_in.dtype());
}

Tensor pad_forward(const Tensor& x_in, const Padding2d& p, double value) {
  const Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = H + p.top + p.bottom, Wo = W + p.left + p.right;
  Tensor out = empty({N, Ho, Wo, C}, x.dtype(), x.device());
  // Output columns [first, last) come from input column wo - left; the rest are padding.
  const int64_t first = std::clamp<int64_t>(p.left, 0, Wo);
  const int64_t last = std::clamp<int64_t>(W + p.left, first, Wo);
  visit_dtype(x.dtype(), [&]<typename T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    const T fill = from_double<T>(value);
    parallel_for(N * Ho, row_grain(Wo * C), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / Ho, h = row % Ho - p.top;
        T* out_row = dst + row * Wo * C;
        if (h < 0 || h >= H) {
          std::fill_n(out_row, Wo * C, fill);
          continue;
        }
        const T* in_row = src + (n * H + h) * W * C;
        std::fill_n(out_row, first * C, fill);
        std::copy_n(in_row + (first - p.left) * C, (last - first) * C, out_row + first * C);
        std::fill_n(out_row + last * C, (Wo - last) * C, fill);
      }
    });
  });
  return out;
}

}  // namespace dcae::ops::cpu
