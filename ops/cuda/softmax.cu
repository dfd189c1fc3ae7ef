#include "ops/cuda/softmax.h"

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/math.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;        // last-dim rows of up to kWarpRowLimit: a warp each
constexpr int64_t kWarpRowLimit = 1024;  // longer rows: a block each

// A contiguous tensor seen as [outer, n, inner] with the softmax dim in the middle.
struct RowLayout {
  int64_t outer = 1, n = 1, inner = 1;
  RowLayout(const Shape& shape, int64_t dim) {
    for (int64_t d = 0; d < dim; ++d) outer *= shape[d];
    n = shape[dim];
    for (int64_t d = dim + 1; d < static_cast<int64_t>(shape.size()); ++d) inner *= shape[d];
  }
};

// Running max and sum of exp(v - max). A NaN never becomes the max (fmax skips it) but turns the sum into NaN, so
// the row comes out NaN as on the CPU; -inf values add nothing (their exp(v - max) would be NaN while max is -inf).
template <typename C>
struct MaxSum {
  C max, sum;
};

template <typename C>
__device__ __forceinline__ C rescaled(const MaxSum<C>& s, C new_max) {
  return s.max == new_max ? s.sum : s.sum * math::exp(s.max - new_max);
}

template <typename C>
__device__ __forceinline__ void add_value(MaxSum<C>& s, C v) {
  const C m = fmax(s.max, v);
  const C term = v == -INFINITY ? C(0) : math::exp(v - m);
  s.sum = rescaled(s, m) + term;
  s.max = m;
}

template <typename C>
__device__ __forceinline__ MaxSum<C> combine(const MaxSum<C>& a, const MaxSum<C>& b) {
  const C m = fmax(a.max, b.max);
  return {m, rescaled(a, m) + rescaled(b, m)};
}

template <typename C>
__device__ __forceinline__ MaxSum<C> warp_combine(MaxSum<C> s) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const MaxSum<C> other{__shfl_xor_sync(0xffffffffu, s.max, offset), __shfl_xor_sync(0xffffffffu, s.sum, offset)};
    s = combine(s, other);
  }
  return s;
}

// Over threadIdx.x: a warp per row (blockDim.x == 32) or a block per row (blockDim.y == 1, all threads call).
template <typename C>
__device__ __forceinline__ MaxSum<C> row_combine(MaxSum<C> s, MaxSum<C>* scratch) {
  s = warp_combine(s);
  if (blockDim.x == kWarp) return s;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  __syncthreads();
  if (lane == 0) scratch[warp] = s;
  __syncthreads();
  s = lane < static_cast<int>(blockDim.x / kWarp) ? scratch[lane] : MaxSum<C>{C(-INFINITY), C(0)};
  return warp_combine(s);
}

template <typename C>
__device__ __forceinline__ C row_sum(C v, C* scratch) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (blockDim.x == kWarp) return v;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / kWarp) ? scratch[lane] : C(0);
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename C>
__device__ __forceinline__ C softmax_value(C v, const MaxSum<C>& s, C log_sum, C inv_sum, bool log) {
  return log ? (v - s.max) - log_sum : math::exp(v - s.max) * inv_sum;
}

// Softmax over the last dim: rows of n contiguous elements.
template <typename T>
__global__ void softmax_rows_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t rows, int64_t n, bool log) {
  using C = ComputeT<T>;
  __shared__ MaxSum<C> scratch[kWarp];
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const T* xr = x + row * n;
    MaxSum<C> s{C(-INFINITY), C(0)};
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) add_value(s, to_compute(xr[j]));
    s = row_combine(s, scratch);
    const C log_sum = math::log(s.sum), inv_sum = C(1) / s.sum;
    T* orow = out + row * n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      orow[j] = from_compute<T>(softmax_value(to_compute(xr[j]), s, log_sum, inv_sum, log));
  }
}

// Softmax over a middle dim: one thread per (outer, inner) column; element j of column (o, i) is at
// (o * n + j) * inner + i.
template <typename T>
__global__ void softmax_columns_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t outer, int64_t n,
                                       int64_t inner, bool log) {
  using C = ComputeT<T>;
  for (int64_t column = global_thread<int64_t>(); column < outer * inner; column += grid_stride<int64_t>()) {
    const int64_t base = (column / inner) * n * inner + column % inner;
    MaxSum<C> s{C(-INFINITY), C(0)};
    for (int64_t j = 0; j < n; ++j) add_value(s, to_compute(x[base + j * inner]));
    const C log_sum = math::log(s.sum), inv_sum = C(1) / s.sum;
    for (int64_t j = 0; j < n; ++j)
      out[base + j * inner] = from_compute<T>(softmax_value(to_compute(x[base + j * inner]), s, log_sum, inv_sum, log));
  }
}

// softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g).
template <typename C>
__device__ __forceinline__ C softmax_grad(C g, C y, C dot, bool log) {
  return log ? g - math::exp(y) * dot : y * (g - dot);
}

template <typename T>
__global__ void softmax_backward_rows_kernel(const T* __restrict__ grad, const T* __restrict__ y, T* __restrict__ dx,
                                             int64_t rows, int64_t n, bool log) {
  using C = ComputeT<T>;
  __shared__ C scratch[kWarp];
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const T* gr = grad + row * n;
    const T* yr = y + row * n;
    C dot = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      dot += log ? to_compute(gr[j]) : to_compute(gr[j]) * to_compute(yr[j]);
    dot = row_sum(dot, scratch);
    T* out = dx + row * n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      out[j] = from_compute<T>(softmax_grad(to_compute(gr[j]), to_compute(yr[j]), dot, log));
  }
}

template <typename T>
__global__ void softmax_backward_columns_kernel(const T* __restrict__ grad, const T* __restrict__ y,
                                                T* __restrict__ dx, int64_t outer, int64_t n, int64_t inner, bool log) {
  using C = ComputeT<T>;
  for (int64_t column = global_thread<int64_t>(); column < outer * inner; column += grid_stride<int64_t>()) {
    const int64_t base = (column / inner) * n * inner + column % inner;
    C dot = 0;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t at = base + j * inner;
      dot += log ? to_compute(grad[at]) : to_compute(grad[at]) * to_compute(y[at]);
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t at = base + j * inner;
      dx[at] = from_compute<T>(softmax_grad(to_compute(grad[at]), to_compute(y[at]), dot, log));
    }
  }
}

dim3 row_block(int64_t n) { return n > kWarpRowLimit ? dim3(kBlockThreads, 1) : dim3(kWarp, kRowsPerBlock); }
unsigned row_grid(int64_t rows, int64_t n) { return grid_for(rows, n > kWarpRowLimit ? 1 : kRowsPerBlock); }

}  // namespace

Tensor softmax_forward(const Tensor& x_in, int64_t dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  const Tensor x = x_in.contiguous();
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return out;
  const RowLayout layout(x.shape(), dim);
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), name, [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    if (layout.inner == 1) {
      softmax_rows_kernel<T><<<row_grid(layout.outer, layout.n), row_block(layout.n), 0, stream>>>(
          px, po, layout.outer, layout.n, log);
      check_launch("softmax_rows_kernel");
    } else {
      softmax_columns_kernel<T><<<grid_for(layout.outer * layout.inner), kBlockThreads, 0, stream>>>(
          px, po, layout.outer, layout.n, layout.inner, log);
      check_launch("softmax_columns_kernel");
    }
  });
  return out;
}

Tensor softmax_backward(const Tensor& grad_in, const Tensor& out_in, int64_t dim, bool log) {
  const char* name = log ? "log_softmax backward" : "softmax backward";
  // Computes in the output's dtype; the result has the gradient's dtype (as on the CPU).
  const Tensor y = out_in.contiguous();
  const Tensor g = grad_in.to(y.dtype()).contiguous();
  Tensor dx = empty(y.shape(), y.dtype(), y.device());
  if (y.numel() == 0) return dx.to(grad_in.dtype());
  const RowLayout layout(y.shape(), dim);
  DeviceGuard guard(y.device().index);
  const cudaStream_t stream = stream_for(y);
  visit_device_float(y.dtype(), name, [&]<typename T>() {
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* py = static_cast<const T*>(y.raw_data());
    T* pd = static_cast<T*>(dx.raw_data());
    if (layout.inner == 1) {
      softmax_backward_rows_kernel<T><<<row_grid(layout.outer, layout.n), row_block(layout.n), 0, stream>>>(
          pg, py, pd, layout.outer, layout.n, log);
      check_launch("softmax_backward_rows_kernel");
    } else {
      softmax_backward_columns_kernel<T><<<grid_for(layout.outer * layout.inner), kBlockThreads, 0, stream>>>(
          pg, py, pd, layout.outer, layout.n, layout.inner, log);
      check_launch("softmax_backward_columns_kernel");
    }
  });
  return dx.to(grad_in.dtype());
}

}  // namespace dcae::ops::cuda
