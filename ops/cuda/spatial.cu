#include "ops/cuda/spatial.h"

#include <cstring>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

// Splits a flat NHWC index into (n, h, w, c) with precomputed dividers (32-bit multiply-high when it fits).
template <typename Index>
struct NhwcIndexer {
  IntDivider<Index> channels, width, height;
  NhwcIndexer(int64_t H, int64_t W, int64_t C)
      : channels(static_cast<Index>(C)), width(static_cast<Index>(W)), height(static_cast<Index>(H)) {}
  struct Position {
    Index n, h, w, c;
  };
  __device__ __forceinline__ Position at(Index i) const {
    Position p;
    Index rest = channels.div(i);
    p.c = i - rest * channels.divisor;
    Index next = width.div(rest);
    p.w = rest - next * width.divisor;
    p.n = height.div(next);
    p.h = next - p.n * height.divisor;
    return p;
  }
};

// Calls launch(Index{}) with uint32_t when every index of both tensors fits 31 bits, else uint64_t.
template <typename Launch>
void with_index_type(int64_t largest, Launch&& launch) {
  if (largest < (int64_t{1} << 31)) launch(uint32_t{});
  else launch(uint64_t{});
}

// out[n, ho, wo, c*r*r + i*r + j] = x[n, ho*r + i, wo*r + j, c]
template <typename U, typename Index>
__global__ void pixel_unshuffle_kernel(U* out, const U* x, NhwcIndexer<Index> out_index, Index n, Index r, Index H,
                                       Index W, Index C) {
  for (Index o = global_thread<Index>(); o < n; o += grid_stride<Index>()) {
    const auto p = out_index.at(o);
    const Index rr = r * r;
    const Index c = p.c / rr, ij = p.c - c * rr;
    const Index i = ij / r, j = ij - i * r;
    out[o] = x[((p.n * H + p.h * r + i) * W + p.w * r + j) * C + c];
  }
}

// out[n, h*r + i, w*r + j, c] = x[n, h, w, c*r*r + i*r + j]
template <typename U, typename Index>
__global__ void pixel_shuffle_kernel(U* out, const U* x, NhwcIndexer<Index> out_index, Index n, Index r, Index H,
                                     Index W, Index C) {
  for (Index o = global_thread<Index>(); o < n; o += grid_stride<Index>()) {
    const auto p = out_index.at(o);
    const Index h = p.h / r, i = p.h - h * r;
    const Index w = p.w / r, j = p.w - w * r;
    out[o] = x[((p.n * H + h) * W + w) * C + p.c * r * r + i * r + j];
  }
}

// out[p, o] = scale * sum(x[p, o*g : (o+1)*g]), accumulated in double like the CPU.
template <typename T>
__global__ void channel_group_sum_kernel(T* out, const T* x, int64_t n, int64_t out_channels, int64_t group,
                                         double scale) {
  for (int64_t i = global_thread<int64_t>(); i < n; i += grid_stride<int64_t>()) {
    const int64_t pixel = i / out_channels, o = i - pixel * out_channels;
    const T* in = x + pixel * out_channels * group + o * group;
    double acc = 0.0;
    for (int64_t k = 0; k < group; ++k) acc += static_cast<double>(to_compute(in[k]));
    out[i] = device_from_double<T>(acc * scale);
  }
}

// out[p, m] = scale * x[p, m / repeats], the product in the compute type like the CPU.
template <typename T>
__global__ void channel_repeat_kernel(T* out, const T* x, int64_t n, int64_t out_channels, int64_t repeats,
                                      ComputeT<T> scale) {
  for (int64_t i = global_thread<int64_t>(); i < n; i += grid_stride<int64_t>()) {
    const int64_t pixel = i / out_channels, m = i - pixel * out_channels;
    out[i] = from_compute<T>(scale * to_compute(x[pixel * (out_channels / repeats) + m / repeats]));
  }
}

// Whole pixels move as `units` (P per pixel) of the widest type that divides the pixel and the alignment.
// out pixel (n, ho, wo) comes from x pixel (n, (ho - top) / s, (wo - left) / s) when that is inside x, else fill.
template <typename Unit, typename Index>
__global__ void move_pixels_kernel(Unit* out, const Unit* x, NhwcIndexer<Index> out_index, Index n, Index H, Index W,
                                   int64_t top, int64_t left, Index scale, Unit fill) {
  for (Index o = global_thread<Index>(); o < n; o += grid_stride<Index>()) {
    const auto p = out_index.at(o);  // p.c is the unit within the pixel
    const int64_t h = static_cast<int64_t>(p.h) - top, w = static_cast<int64_t>(p.w) - left;
    if (h < 0 || w < 0 || h >= static_cast<int64_t>(H * scale) || w >= static_cast<int64_t>(W * scale)) {
      out[o] = fill;
      continue;
    }
    const Index units = out_index.channels.divisor;
    out[o] = x[((p.n * H + static_cast<Index>(h) / scale) * W + static_cast<Index>(w) / scale) * units + p.c];
  }
}

// out[n, h, w, c] = sum of grad over the s x s block above (h, w), in double.
template <typename T>
__global__ void upsample_backward_kernel(T* out, const T* grad, NhwcIndexer<int64_t> out_index, int64_t n,
                                         int64_t s) {
  const int64_t W = out_index.width.divisor, C = out_index.channels.divisor, H = out_index.height.divisor;
  for (int64_t o = global_thread<int64_t>(); o < n; o += grid_stride<int64_t>()) {
    const auto p = out_index.at(o);
    double acc = 0.0;
    for (int64_t i = 0; i < s; ++i) {
      const T* row = grad + ((p.n * H * s + p.h * s + i) * W * s + p.w * s) * C + p.c;
      for (int64_t j = 0; j < s; ++j) acc += static_cast<double>(to_compute(row[j * C]));
    }
    out[o] = device_from_double<T>(acc);
  }
}

template <typename Unit>
Unit repeat_pattern(const unsigned char* element, size_t element_size) {
  unsigned char bytes[sizeof(Unit)];
  for (size_t k = 0; k < sizeof(Unit); ++k) bytes[k] = element[k % element_size];
  Unit unit;
  std::memcpy(&unit, bytes, sizeof(Unit));
  return unit;
}

// Copies whole pixels of x into out (shifted by top/left, upscaled by `scale`), filling outside with `value`.
void move_pixels(const Tensor& out, const Tensor& x, int64_t top, int64_t left, int64_t scale, double value) {
  const size_t element = dtype_size(x.dtype());
  const size_t pixel_bytes = static_cast<size_t>(x.size(3)) * element;
  const auto fits = [&](size_t unit) {
    return pixel_bytes % unit == 0 && reinterpret_cast<uintptr_t>(x.raw_data()) % unit == 0 &&
           reinterpret_cast<uintptr_t>(out.raw_data()) % unit == 0;
  };
  size_t unit = 16;
  while (unit > element && !fits(unit)) unit /= 2;
  unsigned char fill_bytes[8] = {};
  visit_dtype(x.dtype(), [&]<typename T>() {
    const T v = from_double<T>(value);
    std::memcpy(fill_bytes, &v, sizeof(T));
  });
  const int64_t units = static_cast<int64_t>(pixel_bytes / unit);
  const int64_t N = out.size(0), Ho = out.size(1), Wo = out.size(2), H = x.size(1), W = x.size(2);
  const int64_t n = N * Ho * Wo * units;
  const cudaStream_t stream = stream_for(out);
  const auto launch = [&]<typename Unit>() {
    const Unit fill = repeat_pattern<Unit>(fill_bytes, element);
    with_index_type(std::max(n, N * H * W * units), [&](auto index) {
      using Index = decltype(index);
      move_pixels_kernel<Unit, Index><<<grid_for(n), kBlockThreads, 0, stream>>>(
          static_cast<Unit*>(out.raw_data()), static_cast<const Unit*>(x.raw_data()),
          NhwcIndexer<Index>(Ho, Wo, units), static_cast<Index>(n), static_cast<Index>(H), static_cast<Index>(W), top,
          left, static_cast<Index>(scale), fill);
    });
    check_launch("move_pixels_kernel");
  };
  switch (unit) {
    case 16: launch.template operator()<uint4>(); break;
    case 8: launch.template operator()<uint2>(); break;
    case 4: launch.template operator()<uint32_t>(); break;
    case 2: launch.template operator()<uint16_t>(); break;
    default: launch.template operator()<uint8_t>(); break;
  }
}

template <bool kUnshuffle>
Tensor shuffle(const Tensor& x_in, int64_t r) {
  const Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const Shape out_shape = kUnshuffle ? Shape{N, H / r, W / r, C * r * r} : Shape{N, H * r, W * r, C / (r * r)};
  Tensor out = empty(out_shape, x.dtype(), x.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  visit_bits(dtype_size(x.dtype()), [&]<typename U>() {
    with_index_type(n, [&](auto index) {
      using Index = decltype(index);
      const NhwcIndexer<Index> out_index(out_shape[1], out_shape[2], out_shape[3]);
      auto* po = static_cast<U*>(out.raw_data());
      const auto* px = static_cast<const U*>(x.raw_data());
      if constexpr (kUnshuffle)
        pixel_unshuffle_kernel<U, Index><<<grid_for(n), kBlockThreads, 0, stream>>>(
            po, px, out_index, static_cast<Index>(n), static_cast<Index>(r), static_cast<Index>(H),
            static_cast<Index>(W), static_cast<Index>(C));
      else
        pixel_shuffle_kernel<U, Index><<<grid_for(n), kBlockThreads, 0, stream>>>(
            po, px, out_index, static_cast<Index>(n), static_cast<Index>(r), static_cast<Index>(H),
            static_cast<Index>(W), static_cast<Index>(C));
    });
  });
  check_launch(kUnshuffle ? "pixel_unshuffle_kernel" : "pixel_shuffle_kernel");
  return out;
}

}  // namespace

Tensor pixel_unshuffle_forward(const Tensor& x, int64_t factor) { return shuffle<true>(x, factor); }
Tensor pixel_shuffle_forward(const Tensor& x, int64_t factor) { return shuffle<false>(x, factor); }

Tensor channel_group_sum_forward(const Tensor& x_in, int64_t out_channels, double scale) {
  const Tensor x = x_in.contiguous();
  const int64_t C = x.shape().back(), group = C / out_channels;
  Shape out_shape = x.shape();
  out_shape.back() = out_channels;
  Tensor out = empty(out_shape, x.dtype(), x.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  DeviceGuard guard(x.device().index);
  visit_device_float(x.dtype(), "channel_average", [&]<typename T>() {
    channel_group_sum_kernel<T><<<grid_for(n), kBlockThreads, 0, stream_for(x)>>>(
        static_cast<T*>(out.raw_data()), static_cast<const T*>(x.raw_data()), n, out_channels, group, scale);
  });
  check_launch("channel_group_sum_kernel");
  return out;
}

Tensor channel_repeat_forward(const Tensor& x_in, int64_t out_channels, double scale) {
  const Tensor x = x_in.contiguous();
  const int64_t C = x.shape().back(), repeats = out_channels / C;
  Shape out_shape = x.shape();
  out_shape.back() = out_channels;
  Tensor out = empty(out_shape, x.dtype(), x.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  DeviceGuard guard(x.device().index);
  visit_device_float(x.dtype(), "channel_repeat_interleave", [&]<typename T>() {
    channel_repeat_kernel<T><<<grid_for(n), kBlockThreads, 0, stream_for(x)>>>(
        static_cast<T*>(out.raw_data()), static_cast<const T*>(x.raw_data()), n, out_channels, repeats,
        static_cast<ComputeT<T>>(scale));
  });
  check_launch("channel_repeat_kernel");
  return out;
}

Tensor upsample_nearest_forward(const Tensor& x_in, int64_t s) {
  const Tensor x = x_in.contiguous();
  Tensor out = empty({x.size(0), x.size(1) * s, x.size(2) * s, x.size(3)}, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  DeviceGuard guard(x.device().index);
  move_pixels(out, x, 0, 0, s, 0.0);
  return out;
}

Tensor upsample_nearest_backward(const Tensor& grad_in, int64_t s) {
  const Tensor g = grad_in.contiguous();
  const int64_t N = g.size(0), H = g.size(1) / s, W = g.size(2) / s, C = g.size(3);
  Tensor out = empty({N, H, W, C}, g.dtype(), g.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  DeviceGuard guard(g.device().index);
  visit_device_float(g.dtype(), "upsample_nearest backward", [&]<typename T>() {
    upsample_backward_kernel<T><<<grid_for(n), kBlockThreads, 0, stream_for(g)>>>(
        static_cast<T*>(out.raw_data()), static_cast<const T*>(g.raw_data()), NhwcIndexer<int64_t>(H, W, C), n, s);
  });
  check_launch("upsample_backward_kernel");
  return out;
}

Tensor pad_forward(const Tensor& x_in, const Padding2d& p, double value) {
  const Tensor x = x_in.contiguous();
  const int64_t Ho = x.size(1) + p.top + p.bottom, Wo = x.size(2) + p.left + p.right;
  Tensor out = empty({x.size(0), Ho, Wo, x.size(3)}, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  DeviceGuard guard(x.device().index);
  move_pixels(out, x, p.top, p.left, 1, value);
  return out;
}

}  // namespace dcae::ops::cuda
