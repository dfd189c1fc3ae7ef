// DC-AE's resampling blocks with their residual shortcut in one pass (ops/cuda/fused_resample.h).
#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/fused_resample.h"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

// out [N, H*r, W*r, Co]: out[n, h*r+i, w*r+j, c] = y[n, h, w, m] + x[n, h, w, m / repeats], m = c*r*r + i*r + j.
// y is [N, H, W, Co*r*r], x [N, H, W, Co*r*r/repeats]. One rounding, as the unfused add.
template <typename T>
__global__ void pixel_shuffle_add_kernel(T* __restrict__ out, const T* __restrict__ y, const T* __restrict__ x,
                                         int64_t total, int64_t H, int64_t W, int64_t out_channels, int64_t r,
                                         int64_t repeats) {
  const int64_t Wr = W * r, Hr = H * r, M = out_channels * r * r, Cx = M / repeats;
  for (int64_t o = global_thread<int64_t>(); o < total; o += grid_stride<int64_t>()) {
    const int64_t c = o % out_channels;
    int64_t rest = o / out_channels;
    const int64_t wo = rest % Wr;
    rest /= Wr;
    const int64_t ho = rest % Hr, n = rest / Hr;
    const int64_t h = ho / r, i = ho - h * r, w = wo / r, j = wo - w * r;
    const int64_t pixel = (n * H + h) * W + w;
    const int64_t m = c * r * r + i * r + j;
    out[o] = from_compute<T>(to_compute(y[pixel * M + m]) + to_compute(x[pixel * Cx + m / repeats]));
  }
}

// out [N, H, W, Co]: out[n, h, w, o] = y[n, h*r+i, w*r+j, c] (o = c*r*r + i*r + j) + the mean of channels
// [o*g, (o+1)*g) of pixel_unshuffle(x, r); y is [N, H*r, W*r, Co/(r*r)], x [N, H*r, W*r, Cx], g = Cx*r*r / Co.
// The mean is accumulated in double and rounded to T before the add, as downsample_shortcut then add do.
template <typename T>
__global__ void pixel_unshuffle_add_kernel(T* __restrict__ out, const T* __restrict__ y, const T* __restrict__ x,
                                           int64_t total, int64_t H, int64_t W, int64_t out_channels, int64_t r,
                                           int64_t x_channels, int64_t group) {
  const int64_t rr = r * r, Cy = out_channels / rr, Wr = W * r;
  const double inv_group = 1.0 / static_cast<double>(group);
  for (int64_t idx = global_thread<int64_t>(); idx < total; idx += grid_stride<int64_t>()) {
    const int64_t o = idx % out_channels;
    int64_t rest = idx / out_channels;
    const int64_t w = rest % W;
    rest /= W;
    const int64_t h = rest % H, n = rest / H;
    const int64_t base_row = n * H * r + h * r;  // row of the (i = 0) source pixel
    const int64_t c = o / rr, ij = o - c * rr, i = ij / r, j = ij - i * r;
    const T main = y[((base_row + i) * Wr + w * r + j) * Cy + c];
    double acc = 0.0;
    for (int64_t k = o * group; k < (o + 1) * group; ++k) {  // channel k of the unshuffled x
      const int64_t cx = k / rr, kij = k - cx * rr, ki = kij / r, kj = kij - ki * r;
      acc += static_cast<double>(to_compute(x[((base_row + ki) * Wr + w * r + kj) * x_channels + cx]));
    }
    const T shortcut = device_from_double<T>(acc * inv_group);
    out[idx] = from_compute<T>(to_compute(main) + to_compute(shortcut));
  }
}

// Factor-2 fast paths: one thread per output pixel and 16-byte pack of output channels, 32-bit indices (the host
// checks), the same arithmetic per element as the generic kernels above (so the same results).
template <typename T>
__global__ void pixel_shuffle2_add_vec_kernel(T* __restrict__ out, const T* __restrict__ y, const T* __restrict__ x,
                                              uint32_t packs, uint32_t H, uint32_t W, uint32_t out_channels,
                                              uint32_t repeats) {
  using V = Vec16<T>;
  constexpr int kVec = V::kCount;
  const uint32_t packs_per_pixel = out_channels / kVec, M = out_channels * 4, Cx = M / repeats;
  for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < packs; p += gridDim.x * blockDim.x) {
    const uint32_t cp = p % packs_per_pixel, pix = p / packs_per_pixel;
    const uint32_t wo = pix % (2 * W), rest = pix / (2 * W);
    const uint32_t ho = rest % (2 * H), n = rest / (2 * H);
    const uint32_t pixel = (n * H + (ho >> 1)) * W + (wo >> 1);
    const uint32_t ij = (ho & 1) * 2 + (wo & 1);
    const T* yp = y + static_cast<size_t>(pixel) * M;
    const T* xp = x + static_cast<size_t>(pixel) * Cx;
    V o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const uint32_t m = (cp * kVec + k) * 4 + ij;
      o.v[k] = from_compute<T>(to_compute(yp[m]) + to_compute(xp[m / repeats]));
    }
    reinterpret_cast<V*>(out)[p] = o;
  }
}

template <typename T>
__global__ void pixel_unshuffle2_add_vec_kernel(T* __restrict__ out, const T* __restrict__ y, const T* __restrict__ x,
                                                uint32_t packs, uint32_t H, uint32_t W, uint32_t out_channels,
                                                uint32_t x_channels, uint32_t group) {
  using V = Vec16<T>;
  constexpr int kVec = V::kCount;
  const uint32_t packs_per_pixel = out_channels / kVec, Cy = out_channels / 4, W2 = 2 * W;
  const double inv_group = 1.0 / static_cast<double>(group);
  for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < packs; p += gridDim.x * blockDim.x) {
    const uint32_t op = p % packs_per_pixel, pix = p / packs_per_pixel;
    const uint32_t w = pix % W, rest = pix / W;
    const uint32_t h = rest % H, n = rest / H;
    const size_t row0 = static_cast<size_t>(n * H + h) * 2;  // source row of (i = 0)
    V out_pack;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const uint32_t o = op * kVec + k;
      const uint32_t c = o >> 2, i = (o >> 1) & 1, j = o & 1;
      const T main = y[((row0 + i) * W2 + 2 * w + j) * Cy + c];
      double acc = 0.0;
      for (uint32_t kk = o * group; kk < (o + 1) * group; ++kk) {
        const uint32_t cx = kk >> 2, ki = (kk >> 1) & 1, kj = kk & 1;
        acc += static_cast<double>(to_compute(x[((row0 + ki) * W2 + 2 * w + kj) * x_channels + cx]));
      }
      const T shortcut = device_from_double<T>(acc * inv_group);
      out_pack.v[k] = from_compute<T>(to_compute(main) + to_compute(shortcut));
    }
    reinterpret_cast<V*>(out)[p] = out_pack;
  }
}

// Whether the factor-2 vectorised kernels apply to `out` with `channels` per pixel.
bool vector_path(int64_t factor, const Tensor& out, int64_t channels, size_t element) {
  const int64_t vec = 16 / static_cast<int64_t>(element);
  return factor == 2 && channels % vec == 0 && aligned16(out.raw_data()) && out.numel() / vec < (int64_t{1} << 31) &&
         out.numel() < (int64_t{1} << 31) * 2;
}

void check_pair(const char* op, const Tensor& y, const Tensor& x) {
  DCAE_CHECK(y.dim() == 4 && x.dim() == 4 && y.dtype() == x.dtype() && y.device() == x.device() &&
                 y.device().is_cuda() && y.size(0) == x.size(0),
             op, ": y ", y.str(), " and x ", x.str(), " must be NHWC GPU tensors of one dtype and batch");
}

}  // namespace

Tensor pixel_shuffle_add_shortcut(const Tensor& y_in, const Tensor& x_in, int64_t out_channels, int64_t factor) {
  const char* op = "pixel_shuffle_add_shortcut";
  check_pair(op, y_in, x_in);
  const int64_t r = factor, M = out_channels * r * r;
  DCAE_CHECK(r >= 1 && out_channels >= 1 && y_in.size(3) == M && y_in.size(1) == x_in.size(1) &&
                 y_in.size(2) == x_in.size(2) && x_in.size(3) >= 1 && M % x_in.size(3) == 0,
             op, ": y ", y_in.str(), " must hold ", out_channels, " x ", r, "^2 channels at the size of x ", x_in.str(),
             ", whose channels must divide them");
  const Tensor y = y_in.contiguous(), x = x_in.contiguous();
  const int64_t N = y.size(0), H = y.size(1), W = y.size(2);
  Tensor out = empty({N, H * r, W * r, out_channels}, y.dtype(), y.device());
  if (out.numel() == 0) return out;
  DeviceGuard guard(y.device().index);
  const bool fits = y.numel() < (int64_t{1} << 31) && x.numel() < (int64_t{1} << 31);
  visit_device_float(y.dtype(), op, [&]<typename T>() {
    if (fits && vector_path(r, out, out_channels, sizeof(T))) {
      const int64_t packs = out.numel() / (16 / static_cast<int64_t>(sizeof(T)));
      pixel_shuffle2_add_vec_kernel<T><<<grid_for(packs), kBlockThreads, 0, stream_for(y)>>>(
          static_cast<T*>(out.raw_data()), static_cast<const T*>(y.raw_data()), static_cast<const T*>(x.raw_data()),
          static_cast<uint32_t>(packs), static_cast<uint32_t>(H), static_cast<uint32_t>(W),
          static_cast<uint32_t>(out_channels), static_cast<uint32_t>(M / x.size(3)));
      check_launch("pixel_shuffle2_add_vec_kernel");
      return;
    }
    pixel_shuffle_add_kernel<T><<<grid_for(out.numel()), kBlockThreads, 0, stream_for(y)>>>(
        static_cast<T*>(out.raw_data()), static_cast<const T*>(y.raw_data()), static_cast<const T*>(x.raw_data()),
        out.numel(), H, W, out_channels, r, M / x.size(3));
    check_launch("pixel_shuffle_add_kernel");
  });
  return out;
}

Tensor pixel_unshuffle_add_shortcut(const Tensor& y_in, const Tensor& x_in, int64_t out_channels, int64_t factor) {
  const char* op = "pixel_unshuffle_add_shortcut";
  check_pair(op, y_in, x_in);
  const int64_t r = factor, rr = r * r;
  DCAE_CHECK(r >= 1 && out_channels >= 1 && out_channels % rr == 0 && y_in.size(3) * rr == out_channels &&
                 y_in.size(1) == x_in.size(1) && y_in.size(2) == x_in.size(2) && y_in.size(1) % r == 0 &&
                 y_in.size(2) % r == 0 && (x_in.size(3) * rr) % out_channels == 0,
             op, ": y ", y_in.str(), " must unshuffle by ", r, " into ", out_channels, " channels, and x ", x_in.str(),
             " (same size) into a whole multiple of them");
  const Tensor y = y_in.contiguous(), x = x_in.contiguous();
  const int64_t N = y.size(0), H = y.size(1) / r, W = y.size(2) / r;
  Tensor out = empty({N, H, W, out_channels}, y.dtype(), y.device());
  if (out.numel() == 0) return out;
  DeviceGuard guard(y.device().index);
  const bool fits = y.numel() < (int64_t{1} << 31) && x.numel() < (int64_t{1} << 31);
  visit_device_float(y.dtype(), op, [&]<typename T>() {
    if (fits && vector_path(r, out, out_channels, sizeof(T))) {
      const int64_t packs = out.numel() / (16 / static_cast<int64_t>(sizeof(T)));
      pixel_unshuffle2_add_vec_kernel<T><<<grid_for(packs), kBlockThreads, 0, stream_for(y)>>>(
          static_cast<T*>(out.raw_data()), static_cast<const T*>(y.raw_data()), static_cast<const T*>(x.raw_data()),
          static_cast<uint32_t>(packs), static_cast<uint32_t>(H), static_cast<uint32_t>(W),
          static_cast<uint32_t>(out_channels), static_cast<uint32_t>(x.size(3)),
          static_cast<uint32_t>(x.size(3) * rr / out_channels));
      check_launch("pixel_unshuffle2_add_vec_kernel");
      return;
    }
    pixel_unshuffle_add_kernel<T><<<grid_for(out.numel()), kBlockThreads, 0, stream_for(y)>>>(
        static_cast<T*>(out.raw_data()), static_cast<const T*>(y.raw_data()), static_cast<const T*>(x.raw_data()),
        out.numel(), H, W, out_channels, r, x.size(3), x.size(3) * rr / out_channels);
    check_launch("pixel_unshuffle_add_kernel");
  });
  return out;
}

}  // namespace dcae::ops::cuda
