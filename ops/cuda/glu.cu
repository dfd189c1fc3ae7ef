#include "ops/cuda/glu.h"

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/math.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

template <typename C>
__device__ __forceinline__ C sigmoid_of(C v) {
  return C(1) / (C(1) + math::exp(-v));
}

// Work item i covers kWidth consecutive outputs of one row: kWidth = the 16-byte pack, or 1 (scalar path).
template <typename T, int kWidth>
struct alignas(sizeof(T) * kWidth) Pack {
  T v[kWidth];
};

template <typename T, int kWidth>
__device__ __forceinline__ Pack<T, kWidth> load(const T* p) {
  if constexpr (kWidth == 1) return {{*p}};
  else return *reinterpret_cast<const Pack<T, kWidth>*>(p);
}
template <typename T, int kWidth>
__device__ __forceinline__ void store(T* p, const Pack<T, kWidth>& v) {
  if constexpr (kWidth == 1) *p = v.v[0];
  else *reinterpret_cast<Pack<T, kWidth>*>(p) = v;
}

template <typename T, int kWidth>
__global__ void silu_gate_forward_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t rows, int64_t half) {
  const int64_t per_row = half / kWidth;
  for (int64_t i = global_thread<int64_t>(); i < rows * per_row; i += grid_stride<int64_t>()) {
    const int64_t r = i / per_row, c = (i % per_row) * kWidth;
    const Pack<T, kWidth> a = load<T, kWidth>(x + r * 2 * half + c), g = load<T, kWidth>(x + r * 2 * half + half + c);
    Pack<T, kWidth> o;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      const auto gv = to_compute(g.v[k]);
      o.v[k] = from_compute<T>(to_compute(a.v[k]) * (gv * sigmoid_of(gv)));
    }
    store(out + r * half + c, o);
  }
}

template <typename T, int kWidth>
__global__ void silu_gate_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                                          int64_t rows, int64_t half) {
  using C = ComputeT<T>;
  const int64_t per_row = half / kWidth;
  for (int64_t i = global_thread<int64_t>(); i < rows * per_row; i += grid_stride<int64_t>()) {
    const int64_t r = i / per_row, c = (i % per_row) * kWidth;
    const Pack<T, kWidth> a = load<T, kWidth>(x + r * 2 * half + c), g = load<T, kWidth>(x + r * 2 * half + half + c);
    const Pack<T, kWidth> d = load<T, kWidth>(dy + r * half + c);
    Pack<T, kWidth> da, dg;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      const C gv = to_compute(g.v[k]), dv = to_compute(d.v[k]), s = sigmoid_of(gv);
      da.v[k] = from_compute<T>(dv * (gv * s));
      dg.v[k] = from_compute<T>(dv * to_compute(a.v[k]) * (s * (C(1) + gv * (C(1) - s))));
    }
    store(dx + r * 2 * half + c, da);
    store(dx + r * 2 * half + half + c, dg);
  }
}

// Calls launch.template operator()<kWidth>() with the 16-byte pack width when every row start is aligned for it.
template <typename T, typename Launch>
void with_width(int64_t half, std::initializer_list<const void*> pointers, Launch&& launch) {
  constexpr int kVec = Vec16<T>::kCount;
  bool vector = half % kVec == 0;
  for (const void* p : pointers) vector = vector && aligned16(p);
  if (vector) launch.template operator()<kVec>();
  else launch.template operator()<1>();
}

}  // namespace

Tensor silu_gate_forward(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  const int64_t half = x.shape().back() / 2, rows = x.numel() / std::max<int64_t>(2 * half, 1);
  Shape shape = x.shape();
  shape.back() = half;
  Tensor out = empty(shape, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), "silu_gate", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    with_width<T>(half, {px, po}, [&]<int kWidth>() {
      silu_gate_forward_kernel<T, kWidth><<<grid_for(rows * half / kWidth), kBlockThreads, 0, stream>>>(px, po, rows, half);
    });
  });
  check_launch("silu_gate_forward_kernel");
  return out;
}

Tensor silu_gate_backward(const Tensor& grad, const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  const Tensor dy = grad.to(x.dtype()).contiguous();
  const int64_t half = x.shape().back() / 2, rows = x.numel() / std::max<int64_t>(2 * half, 1);
  Tensor dx = empty(x.shape(), x.dtype(), x.device());
  if (dx.numel() == 0) return dx.to(grad.dtype());
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), "silu_gate backward", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pg = static_cast<const T*>(dy.raw_data());
    T* pd = static_cast<T*>(dx.raw_data());
    with_width<T>(half, {px, pg, pd}, [&]<int kWidth>() {
      silu_gate_backward_kernel<T, kWidth><<<grid_for(rows * half / kWidth), kBlockThreads, 0, stream>>>(pg, px, pd,
                                                                                                        rows, half);
    });
  });
  check_launch("silu_gate_backward_kernel");
  return dx.to(grad.dtype());
}

}  // namespace dcae::ops::cuda
