#include "ops/cuda/reduce.h"

#include <algorithm>

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/math.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

constexpr int kWarp = 32;
constexpr int kColumnTile = 32;  // columns per block in column reductions (threadIdx.x)
constexpr int kColumnRows = 8;   // row phases per block in column reductions (threadIdx.y)
constexpr int64_t kRowsPerWarpLimit = 4096;  // longer rows get whole blocks, split when there are few of them

// Reduced dims as one run: x viewed as [outer, reduced, inner] (row-major, contiguous).
struct ReductionShape {
  int64_t outer = 1, reduced = 1, inner = 1;
};

Shape kept_shape(const Shape& shape, const std::vector<int64_t>& dims) {
  Shape out = shape;
  for (int64_t d : dims) out[d] = 1;
  return out;
}

// True (and the three extents) when the reduced dims of size > 1 are adjacent among the dims of size > 1.
bool as_single_run(const Shape& shape, const std::vector<int64_t>& dims, ReductionShape& rs) {
  int phase = 0;  // 0: before the run, 1: inside it, 2: after it
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (shape[d] == 1) continue;
    const bool reduced = std::binary_search(dims.begin(), dims.end(), d);
    if (reduced) {
      if (phase == 2) return false;
      phase = 1;
      rs.reduced *= shape[d];
    } else {
      if (phase == 1) phase = 2;
      (phase == 0 ? rs.outer : rs.inner) *= shape[d];
    }
  }
  return true;
}

int target_blocks() { return 4 * multiprocessor_count(current_device()); }

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename In>
__device__ __forceinline__ double as_double(In v) {
  return static_cast<double>(to_compute(v));
}

// One warp per row of `reduced` elements: out[row] = sum(x[row, :]).
template <typename In, typename Out>
__global__ void sum_rows_warp_kernel(const In* x, Out* out, int64_t rows, int64_t reduced) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t row = global_thread<int64_t>() / kWarp; row < rows; row += warps) {
    const In* p = x + row * reduced;
    double acc = 0.0;
    for (int64_t i = lane; i < reduced; i += kWarp) acc += as_double(p[i]);
    acc = warp_sum(acc);
    if (lane == 0) out[row] = device_from_double<Out>(acc);
  }
}

// Block b sums chunk (b % chunks) of row (b / chunks) into out[b].
template <typename In, typename Out>
__global__ void sum_rows_block_kernel(const In* x, Out* out, int64_t rows, int64_t reduced, int64_t chunks) {
  __shared__ double partial[kBlockThreads / kWarp];
  for (int64_t job = blockIdx.x; job < rows * chunks; job += gridDim.x) {
    const int64_t row = job / chunks, chunk = job % chunks;
    const int64_t begin = reduced * chunk / chunks, end = reduced * (chunk + 1) / chunks;
    const In* p = x + row * reduced;
    double acc = 0.0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += as_double(p[i]);
    acc = warp_sum(acc);
    if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = acc;
    __syncthreads();
    if (threadIdx.x < kWarp) {
      acc = threadIdx.x < blockDim.x / kWarp ? partial[threadIdx.x] : 0.0;
      acc = warp_sum(acc);
      if (threadIdx.x == 0) out[job] = device_from_double<Out>(acc);
    }
    __syncthreads();  // partial[] is reused by the next job
  }
}

// out[o, chunk, i] = sum over chunk `chunk` of r of x[o, r, i]. Block (32 columns) x (8 row phases).
template <typename In, typename Out>
__global__ void sum_columns_kernel(const In* x, Out* out, int64_t outer, int64_t reduced, int64_t inner,
                                   int64_t chunks) {
  __shared__ double partial[kColumnRows][kColumnTile + 1];
  const int64_t column = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  for (int64_t job = blockIdx.y; job < outer * chunks; job += gridDim.y) {
    const int64_t o = job / chunks, chunk = job % chunks;
    const int64_t begin = reduced * chunk / chunks, end = reduced * (chunk + 1) / chunks;
    double acc = 0.0;
    if (column < inner) {
      const In* p = x + o * reduced * inner + column;
      for (int64_t r = begin + threadIdx.y; r < end; r += kColumnRows) acc += as_double(p[r * inner]);
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && column < inner) {
      double total = 0.0;
#pragma unroll
      for (int k = 0; k < kColumnRows; ++k) total += partial[k][threadIdx.x];
      out[job * inner + column] = device_from_double<Out>(total);
    }
    __syncthreads();
  }
}

template <typename In, typename Out>
void sum_rows(const In* x, Out* out, int64_t rows, int64_t reduced, cudaStream_t stream, int64_t chunks) {
  if (chunks <= 1 && reduced <= kRowsPerWarpLimit) {
    const int64_t warps_per_block = kBlockThreads / kWarp;
    const unsigned grid = grid_for((rows + warps_per_block - 1) / warps_per_block, 1);
    sum_rows_warp_kernel<In, Out><<<grid, kBlockThreads, 0, stream>>>(x, out, rows, reduced);
    check_launch("sum_rows_warp_kernel");
  } else {
    const unsigned grid = grid_for(rows * chunks, 1);
    sum_rows_block_kernel<In, Out><<<grid, kBlockThreads, 0, stream>>>(x, out, rows, reduced, chunks);
    check_launch("sum_rows_block_kernel");
  }
}

template <typename In, typename Out>
void sum_columns(const In* x, Out* out, const ReductionShape& rs, int64_t chunks, cudaStream_t stream) {
  const dim3 block(kColumnTile, kColumnRows);
  const int64_t tiles = (rs.inner + kColumnTile - 1) / kColumnTile;
  DCAE_CHECK(tiles < (int64_t{1} << 31), "sum: ", rs.inner, " columns are too many for one launch");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(std::min<int64_t>(rs.outer * chunks, 65535)));
  sum_columns_kernel<In, Out><<<grid, block, 0, stream>>>(x, out, rs.outer, rs.reduced, rs.inner, chunks);
  check_launch("sum_columns_kernel");
}

// Splits long reductions so that the device has about target_blocks() blocks of work; partial sums (f64) are
// then summed in a fixed order, so results do not depend on timing.
template <typename T>
void sum_run(const T* x, T* out, const ReductionShape& rs, const Device& device, cudaStream_t stream) {
  const int64_t target = target_blocks();
  if (rs.inner == 1) {
    int64_t chunks = 1;
    if (rs.reduced > kRowsPerWarpLimit && rs.outer < target)
      chunks = std::min<int64_t>((target + rs.outer - 1) / rs.outer, (rs.reduced + kRowsPerWarpLimit - 1) / kRowsPerWarpLimit);
    if (chunks <= 1) return sum_rows<T, T>(x, out, rs.outer, rs.reduced, stream, 1);
    Tensor partial = empty({rs.outer * chunks}, DType::f64, device);
    sum_rows<T, double>(x, partial.data<double>(), rs.outer, rs.reduced, stream, chunks);
    return sum_rows<double, T>(partial.data<double>(), out, rs.outer, chunks, stream, 1);
  }
  const int64_t blocks = rs.outer * ((rs.inner + kColumnTile - 1) / kColumnTile);
  int64_t chunks = 1;
  if (blocks < target && rs.reduced > 8 * kColumnRows)
    chunks = std::min<int64_t>((target + blocks - 1) / blocks, rs.reduced / (8 * kColumnRows));
  if (chunks <= 1) return sum_columns<T, T>(x, out, rs, 1, stream);
  Tensor partial = empty({rs.outer, chunks, rs.inner}, DType::f64, device);
  sum_columns<T, double>(x, partial.data<double>(), rs, chunks, stream);
  sum_columns<double, T>(partial.data<double>(), out, ReductionShape{rs.outer, chunks, rs.inner}, 1, stream);
}

// Argmax order: NaN beats numbers, then larger values; ties go to the lower index (the CPU's first maximum).
template <typename C>
__device__ __forceinline__ bool better(C v, int64_t i, C best, int64_t best_i) {
  const bool v_nan = math::isnan(v), best_nan = math::isnan(best);
  if (v_nan != best_nan) return v_nan;
  if (!v_nan && v != best) return v > best;
  return i < best_i;
}

// One block per row (inner == 1): value and index of the first maximum of x[row, :].
template <typename T>
__global__ void max_rows_kernel(const T* x, T* out, int64_t* indices, int64_t rows, int64_t reduced) {
  using C = ComputeT<T>;
  __shared__ C best_values[kBlockThreads];
  __shared__ int64_t best_indices[kBlockThreads];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* p = x + row * reduced;
    C best = to_compute(p[0]);
    int64_t best_i = 0;
    for (int64_t i = threadIdx.x; i < reduced; i += blockDim.x) {
      const C v = to_compute(p[i]);
      if (better(v, i, best, best_i)) best = v, best_i = i;
    }
    best_values[threadIdx.x] = best;
    best_indices[threadIdx.x] = best_i;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) {
        const int other = threadIdx.x + stride;
        if (better(best_values[other], best_indices[other], best_values[threadIdx.x], best_indices[threadIdx.x])) {
          best_values[threadIdx.x] = best_values[other];
          best_indices[threadIdx.x] = best_indices[other];
        }
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      out[row] = p[best_indices[0]];
      indices[row] = best_indices[0];
    }
    __syncthreads();
  }
}

// One thread per (outer, inner) column: walks r in order, so reads are coalesced across threads when inner > 1.
template <typename T>
__global__ void max_columns_kernel(const T* x, T* out, int64_t* indices, int64_t outer, int64_t reduced,
                                   int64_t inner) {
  for (int64_t job = global_thread<int64_t>(); job < outer * inner; job += grid_stride<int64_t>()) {
    const int64_t o = job / inner, column = job % inner;
    const T* p = x + o * reduced * inner + column;
    auto best = to_compute(p[0]);
    int64_t best_i = 0;
    for (int64_t r = 1; r < reduced; ++r) {
      const auto v = to_compute(p[r * inner]);
      if (better(v, r, best, best_i)) best = v, best_i = r;
    }
    out[job] = p[best_i * inner];
    indices[job] = best_i;
  }
}

// out[o, r, i] = r == indices[o, i] ? grad[o, i] : 0 (element bits: 0 is all-zero bits in every float dtype).
template <typename U>
__global__ void max_backward_kernel(U* out, const U* grad, const int64_t* indices, int64_t outer, int64_t reduced,
                                    int64_t inner) {
  const int64_t n = outer * reduced * inner;
  for (int64_t i = global_thread<int64_t>(); i < n; i += grid_stride<int64_t>()) {
    const int64_t column = i % inner, rest = i / inner;
    const int64_t r = rest % reduced, o = rest / reduced;
    const int64_t source = o * inner + column;
    out[i] = indices[source] == r ? grad[source] : U(0);
  }
}

ReductionShape around_dim(const Shape& shape, int64_t dim) {
  ReductionShape rs;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d)
    (d < dim ? rs.outer : d == dim ? rs.reduced : rs.inner) *= shape[d];
  return rs;
}

}  // namespace

Tensor sum_forward(const Tensor& x_in, const std::vector<int64_t>& dims) {
  const Shape out_shape = kept_shape(x_in.shape(), dims);
  Tensor out = empty(out_shape, x_in.dtype(), x_in.device());
  if (out.numel() == 0) return out;
  if (x_in.numel() == 0) return out.zero_();
  Tensor x = x_in.contiguous();
  ReductionShape rs;
  const bool single_run = as_single_run(x.shape(), dims, rs);
  if (single_run && rs.reduced == 1) return out.copy_(x.reshape(out_shape));  // only size-1 dims reduced
  if (!single_run) {
    // Reduced dims interleave with kept ones: move them last (one copy), then reduce rows.
    std::vector<int64_t> order;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (!std::binary_search(dims.begin(), dims.end(), d)) order.push_back(d);
    order.insert(order.end(), dims.begin(), dims.end());
    x = x.permute(order).contiguous();
    rs = ReductionShape{out.numel(), x.numel() / out.numel(), 1};
  }
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), "sum", [&]<typename T>() {
    sum_run<T>(static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), rs, x.device(), stream);
  });
  return out;
}

Tensor max_forward(const Tensor& x_in, int64_t dim, Tensor& indices) {
  const Tensor x = x_in.contiguous();
  const Shape out_shape = kept_shape(x.shape(), {dim});
  DCAE_CHECK(x.shape()[dim] > 0, "max over an empty dim of ", x_in.str());
  Tensor out = empty(out_shape, x.dtype(), x.device());
  indices = empty(out_shape, DType::i64, x.device());
  if (out.numel() == 0) return out;
  const ReductionShape rs = around_dim(x.shape(), dim);
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), "max", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    int64_t* pi = indices.data<int64_t>();
    if (rs.inner == 1 && rs.reduced > 64) {  // long rows: a block per row
      max_rows_kernel<T><<<grid_for(rs.outer, 1), kBlockThreads, 0, stream>>>(px, po, pi, rs.outer, rs.reduced);
      check_launch("max_rows_kernel");
    } else {
      max_columns_kernel<T><<<grid_for(rs.outer * rs.inner), kBlockThreads, 0, stream>>>(px, po, pi, rs.outer,
                                                                                          rs.reduced, rs.inner);
      check_launch("max_columns_kernel");
    }
  });
  return out;
}

Tensor max_backward(const Tensor& grad_in, const Tensor& indices_in, const Shape& shape, int64_t dim) {
  const Tensor grad = grad_in.contiguous(), indices = indices_in.contiguous();
  DCAE_CHECK(is_floating(grad.dtype()), "max backward needs a floating gradient, got ", grad.str());
  Tensor out = empty(shape, grad.dtype(), grad.device());
  if (out.numel() == 0) return out;
  const ReductionShape rs = around_dim(shape, dim);
  DeviceGuard guard(out.device().index);
  const cudaStream_t stream = stream_for(out);
  visit_bits(dtype_size(grad.dtype()), [&]<typename U>() {
    max_backward_kernel<U><<<grid_for(out.numel()), kBlockThreads, 0, stream>>>(
        static_cast<U*>(out.raw_data()), static_cast<const U*>(grad.raw_data()), indices.data<int64_t>(), rs.outer,
        rs.reduced, rs.inner);
  });
  check_launch("max_backward_kernel");
  return out;
}

}  // namespace dcae::ops::cuda
