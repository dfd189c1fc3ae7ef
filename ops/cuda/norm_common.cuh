// Shared pieces of the normalization kernels (.cu files only): warp/row-group sums and per-channel column sums.
#pragma once
#include <algorithm>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda::norm_detail {

using namespace ::dcae::cuda;

constexpr int kWarp = 32;

// x's per-channel affine parameter: [C] in x's dtype on x's device (undefined: absent).
inline void check_parameter(const char* op, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  DCAE_CHECK(p.dtype() == x.dtype() && p.numel() == x.size(-1) && p.device() == x.device(), op, ": parameter ",
             p.str(), " does not match x ", x.str());
}

// The dtype of saved statistics: f64 for f64 inputs, f32 otherwise.
inline DType stat_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

// Sum over the 32 lanes of a warp; every lane gets the total.
template <typename A>
__device__ __forceinline__ A warp_all_sum(A v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over threadIdx.x. Rows are either one per warp (blockDim.x == 32) or one per block (blockDim.y == 1, and then
// every thread of the block must call this). `scratch` holds 32 values in shared memory.
template <typename A>
__device__ __forceinline__ A row_group_sum(A v, A* scratch) {
  v = warp_all_sum(v);
  if (blockDim.x == kWarp) return v;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / kWarp) ? scratch[lane] : A(0);
  return warp_all_sum(v);
}

constexpr int kColumnTile = 32;  // channels per block in channel_sums_kernel (threadIdx.x)
constexpr int kColumnRows = 8;   // row phases per block (threadIdx.y)

// For x viewed as [segments, rows, channels]: out[segment, chunk, 0 or 1, c] = sums over the rows of `chunk` of the
// two values term(segment, row, c, flat index) returns (a double2), accumulated in f64.
template <typename Term>
__global__ void channel_sums_kernel(Term term, int64_t segments, int64_t rows, int64_t channels, int64_t chunks,
                                    double* out) {
  __shared__ double2 partial[kColumnRows][kColumnTile + 1];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  for (int64_t job = blockIdx.y; job < segments * chunks; job += gridDim.y) {
    const int64_t s = job / chunks, chunk = job % chunks;
    const int64_t begin = rows * chunk / chunks, end = rows * (chunk + 1) / chunks;
    double2 acc = make_double2(0.0, 0.0);
    if (c < channels) {
      for (int64_t r = begin + threadIdx.y; r < end; r += kColumnRows) {
        const double2 v = term(s, r, c, (s * rows + r) * channels + c);
        acc.x += v.x;
        acc.y += v.y;
      }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < channels) {
      double2 total = partial[0][threadIdx.x];
#pragma unroll
      for (int k = 1; k < kColumnRows; ++k) {
        total.x += partial[k][threadIdx.x].x;
        total.y += partial[k][threadIdx.x].y;
      }
      double* dst = out + job * 2 * channels;
      dst[c] = total.x;
      dst[channels + c] = total.y;
    }
    __syncthreads();  // partial[] is reused by the next job
  }
}

// out[s, i] = sum over chunks of partial[s, chunk, i] (i < width), in chunk order.
template <typename A>
__global__ void sum_chunks_kernel(const A* partial, double* out, int64_t segments, int64_t chunks, int64_t width) {
  for (int64_t i = global_thread<int64_t>(); i < segments * width; i += grid_stride<int64_t>()) {
    const int64_t s = i / width, col = i % width;
    const A* p = partial + s * chunks * width + col;
    double total = 0.0;
    for (int64_t k = 0; k < chunks; ++k) total += static_cast<double>(p[k * width]);
    out[i] = total;
  }
}

// Per-(segment, channel) sums of term's two values over every row: a [segments, 2, channels] f64 tensor on `device`.
// Long reductions are cut into row chunks so that the device has enough blocks; partials are summed in order, so
// the result does not depend on timing.
template <typename Term>
Tensor channel_sums(const Term& term, int64_t segments, int64_t rows, int64_t channels, const Device& device,
                    cudaStream_t stream) {
  Tensor out = empty({segments, 2, channels}, DType::f64, device);
  if (out.numel() == 0) return out;
  const int64_t tiles = (channels + kColumnTile - 1) / kColumnTile;
  DCAE_CHECK(tiles < (int64_t{1} << 31), "norm: ", channels, " channels are too many for one launch");
  const int64_t target = 4 * multiprocessor_count(device.index);
  int64_t chunks = 1;
  if (tiles * segments < target) chunks = std::clamp<int64_t>(target / (tiles * segments), 1, std::max<int64_t>(rows / 64, 1));
  const dim3 block(kColumnTile, kColumnRows);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(std::min<int64_t>(segments * chunks, 65535)));
  if (chunks == 1) {
    channel_sums_kernel<Term><<<grid, block, 0, stream>>>(term, segments, rows, channels, 1, out.data<double>());
    check_launch("channel_sums_kernel");
    return out;
  }
  Tensor partial = empty({segments, chunks, 2, channels}, DType::f64, device);
  channel_sums_kernel<Term><<<grid, block, 0, stream>>>(term, segments, rows, channels, chunks, partial.data<double>());
  check_launch("channel_sums_kernel");
  sum_chunks_kernel<double><<<grid_for(segments * 2 * channels), kBlockThreads, 0, stream>>>(
      partial.data<double>(), out.data<double>(), segments, chunks, 2 * channels);
  check_launch("sum_chunks_kernel");
  return out;
}

// The per-channel gradient of an affine parameter from per-(segment, 2, channel) sums: sums[s, which, c] over s,
// rounded to T.
template <typename T>
__global__ void parameter_grad_kernel(const double* sums, T* out, int64_t segments, int64_t channels, int which) {
  for (int64_t c = global_thread<int64_t>(); c < channels; c += grid_stride<int64_t>()) {
    double total = 0.0;
    for (int64_t s = 0; s < segments; ++s) total += sums[(s * 2 + which) * channels + c];
    out[c] = device_from_double<T>(total);
  }
}

}  // namespace dcae::ops::cuda::norm_detail
