#include "ops/cuda/conv2d_direct.h"

#include <algorithm>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

// out[n, oh, ow, co] = sum over (i, j, c) of x[n, oh*s - p + i, ow*s - p + j, group(co)*Cin_g + c] * w[co, i, j, c].
// Consecutive threads take consecutive output channels, so loads of x are shared or coalesced across a warp.
template <typename T>
__global__ void forward_kernel(ConvGeometry g, const T* x, const T* w, T* y, int64_t total) {
  using C = ComputeT<T>;
  const int64_t cin_g = g.cin_g(), cout_g = g.cout_g();
  for (int64_t idx = global_thread<int64_t>(); idx < total; idx += grid_stride<int64_t>()) {
    const int64_t co = idx % g.cout;
    int64_t rest = idx / g.cout;
    const int64_t ow = rest % g.wo;
    rest /= g.wo;
    const int64_t oh = rest % g.ho, n = rest / g.ho;
    const T* x_group = x + (co / cout_g) * cin_g;
    C acc = 0;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t h = oh * g.stride - g.pad + i;
      if (h < 0 || h >= g.h) continue;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t col = ow * g.stride - g.pad + j;
        if (col < 0 || col >= g.w) continue;
        const T* xp = x_group + ((n * g.h + h) * g.w + col) * g.cin;
        const T* wp = w + ((co * g.kh + i) * g.kw + j) * cin_g;
        for (int64_t c = 0; c < cin_g; ++c) acc += to_compute(xp[c]) * to_compute(wp[c]);
      }
    }
    y[idx] = from_compute<T>(acc);
  }
}

// dx[n, h, w, ci] = sum over the output pixels whose field covers (h, w) and the group's output channels of
// dy * w - a gather, so every element is written once without atomics.
template <typename T>
__global__ void backward_data_kernel(ConvGeometry g, const T* dy, const T* w, T* dx, int64_t total) {
  using C = ComputeT<T>;
  const int64_t cin_g = g.cin_g(), cout_g = g.cout_g(), filter_stride = g.kh * g.kw * cin_g;
  for (int64_t idx = global_thread<int64_t>(); idx < total; idx += grid_stride<int64_t>()) {
    const int64_t ci = idx % g.cin;
    int64_t rest = idx / g.cin;
    const int64_t col = rest % g.w;
    rest /= g.w;
    const int64_t h = rest % g.h, n = rest / g.h;
    const int64_t group = ci / cin_g, c_in_group = ci - group * cin_g;
    C acc = 0;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t th = h + g.pad - i;
      if (th < 0 || th % g.stride != 0 || th / g.stride >= g.ho) continue;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t tw = col + g.pad - j;
        if (tw < 0 || tw % g.stride != 0 || tw / g.stride >= g.wo) continue;
        const T* gp = dy + ((n * g.ho + th / g.stride) * g.wo + tw / g.stride) * g.cout + group * cout_g;
        const T* wp = w + ((group * cout_g * g.kh + i) * g.kw + j) * cin_g + c_in_group;
        for (int64_t co = 0; co < cout_g; ++co) acc += to_compute(gp[co]) * to_compute(wp[co * filter_stride]);
      }
    }
    dx[idx] = from_compute<T>(acc);
  }
}

// dw[co, i, j, c] = sum over every output pixel of dy[.., co] * x[.., group(co)*Cin_g + c], summed in fp64. One
// thread per filter element: only for small problems (f64, fallbacks).
template <typename T>
__global__ void backward_filter_kernel(ConvGeometry g, const T* x, const T* dy, T* dw, int64_t total) {
  const int64_t cin_g = g.cin_g(), cout_g = g.cout_g();
  for (int64_t idx = global_thread<int64_t>(); idx < total; idx += grid_stride<int64_t>()) {
    const int64_t c = idx % cin_g;
    int64_t rest = idx / cin_g;
    const int64_t j = rest % g.kw;
    rest /= g.kw;
    const int64_t i = rest % g.kh, co = rest / g.kh;
    const int64_t ci = (co / cout_g) * cin_g + c;
    double acc = 0.0;
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t oh = 0; oh < g.ho; ++oh) {
        const int64_t h = oh * g.stride - g.pad + i;
        if (h < 0 || h >= g.h) continue;
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          const int64_t col = ow * g.stride - g.pad + j;
          if (col < 0 || col >= g.w) continue;
          acc += static_cast<double>(to_compute(dy[((n * g.ho + oh) * g.wo + ow) * g.cout + co])) *
                 static_cast<double>(to_compute(x[((n * g.h + h) * g.w + col) * g.cin + ci]));
        }
      }
    dw[idx] = device_from_double<T>(acc);
  }
}

constexpr int kDepthwiseThreads = 128;

// Depthwise K x K weight gradient, pass 1: block (channel tile, pixel chunk) sums dy * x over its chunk of output
// pixels for all K*K taps of one channel per thread, into partial[chunk, tap, c].
template <typename T, int K>
__global__ void depthwise_filter_partial_kernel(ConvGeometry g, const T* x, const T* dy, ComputeT<T>* partial,
                                                int64_t pixels, int64_t per_chunk) {
  using C = ComputeT<T>;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= g.cout) return;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * per_chunk;
  const int64_t end = begin + per_chunk < pixels ? begin + per_chunk : pixels;
  C acc[K * K];
#pragma unroll
  for (int t = 0; t < K * K; ++t) acc[t] = 0;
  for (int64_t p = begin; p < end; ++p) {
    const int64_t ow = p % g.wo, rest = p / g.wo;
    const int64_t oh = rest % g.ho, n = rest / g.ho;
    const C grad = to_compute(dy[p * g.cout + c]);
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const int64_t h = oh * g.stride - g.pad + i;
      if (h < 0 || h >= g.h) continue;
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const int64_t col = ow * g.stride - g.pad + j;
        if (col < 0 || col >= g.w) continue;
        acc[i * K + j] += grad * to_compute(x[((n * g.h + h) * g.w + col) * g.cin + c]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < K * K; ++t) partial[(static_cast<int64_t>(blockIdx.y) * K * K + t) * g.cout + c] = acc[t];
}

// Pass 2: dw[c, tap] = sum over chunks of partial[chunk, tap, c], in fp64 and in chunk order (deterministic).
template <typename T>
__global__ void depthwise_filter_reduce_kernel(const ComputeT<T>* partial, T* dw, int64_t channels, int64_t taps,
                                               int64_t chunks) {
  for (int64_t idx = global_thread<int64_t>(); idx < channels * taps; idx += grid_stride<int64_t>()) {
    const int64_t c = idx % channels, tap = idx / channels;
    double sum = 0.0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += static_cast<double>(partial[(chunk * taps + tap) * channels + c]);
    dw[c * taps + tap] = device_from_double<T>(sum);
  }
}

template <typename T, int K>
void depthwise_filter(const ConvGeometry& g, int device, const T* x, const T* dy, T* dw, cudaStream_t stream) {
  using C = ComputeT<T>;
  const int64_t pixels = g.n * g.ho * g.wo, taps = K * K;
  const int64_t tiles = (g.cout + kDepthwiseThreads - 1) / kDepthwiseThreads;
  const int64_t target_blocks = 4 * multiprocessor_count(device);
  const int64_t chunks =
      std::clamp<int64_t>((target_blocks + tiles - 1) / tiles, 1, std::min<int64_t>(65535, std::max<int64_t>(1, pixels / 64)));
  const int64_t per_chunk = (pixels + chunks - 1) / chunks;
  Tensor partial = empty({chunks * taps * g.cout}, std::is_same_v<C, double> ? DType::f64 : DType::f32,
                         Device::cuda(device));
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  depthwise_filter_partial_kernel<T, K><<<grid, kDepthwiseThreads, 0, stream>>>(g, x, dy, partial.data<C>(), pixels,
                                                                                per_chunk);
  check_launch("depthwise_filter_partial_kernel");
  depthwise_filter_reduce_kernel<T><<<grid_for(g.cout * taps), kBlockThreads, 0, stream>>>(partial.data<C>(), dw,
                                                                                           g.cout, taps, chunks);
  check_launch("depthwise_filter_reduce_kernel");
}

}  // namespace

void direct_conv2d_forward(const ConvGeometry& g, DType dtype, int device, const void* x, const void* w, void* y) {
  const int64_t total = g.n * g.ho * g.wo * g.cout;
  if (total == 0) return;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device).handle();
  visit_device_float(dtype, "conv2d", [&]<typename T>() {
    forward_kernel<T><<<grid_for(total), kBlockThreads, 0, stream>>>(g, static_cast<const T*>(x),
                                                                     static_cast<const T*>(w), static_cast<T*>(y), total);
  });
  check_launch("conv2d forward_kernel");
}

void direct_conv2d_backward_data(const ConvGeometry& g, DType dtype, int device, const void* dy, const void* w,
                                 void* dx) {
  const int64_t total = g.n * g.h * g.w * g.cin;
  if (total == 0) return;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device).handle();
  visit_device_float(dtype, "conv2d backward", [&]<typename T>() {
    backward_data_kernel<T><<<grid_for(total), kBlockThreads, 0, stream>>>(
        g, static_cast<const T*>(dy), static_cast<const T*>(w), static_cast<T*>(dx), total);
  });
  check_launch("conv2d backward_data_kernel");
}

void direct_conv2d_backward_filter(const ConvGeometry& g, DType dtype, int device, const void* x, const void* dy,
                                   void* dw) {
  const int64_t total = g.cout * g.kh * g.kw * g.cin_g();
  if (total == 0) return;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device).handle();
  visit_device_float(dtype, "conv2d backward", [&]<typename T>() {
    const T* px = static_cast<const T*>(x);
    const T* pdy = static_cast<const T*>(dy);
    T* pdw = static_cast<T*>(dw);
    if (g.depthwise() && g.kh == g.kw) {
      switch (g.kh) {
        case 3: return depthwise_filter<T, 3>(g, device, px, pdy, pdw, stream);
        case 5: return depthwise_filter<T, 5>(g, device, px, pdy, pdw, stream);
        case 7: return depthwise_filter<T, 7>(g, device, px, pdy, pdw, stream);
        default: break;
      }
    }
    backward_filter_kernel<T><<<grid_for(total), kBlockThreads, 0, stream>>>(g, px, pdy, pdw, total);
    check_launch("conv2d backward_filter_kernel");
  });
}

}  // namespace dcae::ops::cuda
