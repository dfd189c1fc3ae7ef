// Shared pieces of the ReLU linear attention kernels (.cu files only): the NHWC qkv layout, tile loads into shared
// memory, and a block-wide small matrix product on shared-memory operands.
#pragma once
#include <cuda_runtime.h>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda::linear_detail {

using namespace ::dcae::cuda;

constexpr int kThreads = 256;

// qkv NHWC [N, H, W, 3C] (contiguous) seen per (image, head): Ntok = H*W token rows of stride 3C; head h's q, k and
// v are the channel runs [h*3d, h*3d + d), [+d, +2d), [+2d, +3d). The output and its gradient are [N, H, W, C] with
// head h at channels [h*d, h*d + d).
struct QkvLayout {
  int64_t images, tokens, channels, head_dim, heads;
  __host__ __device__ int64_t in_offset(int64_t image, int64_t head) const {
    return image * tokens * 3 * channels + head * 3 * head_dim;
  }
  __host__ __device__ int64_t out_offset(int64_t image, int64_t head) const {
    return image * tokens * channels + head * head_dim;
  }
};

enum class Part { q = 0, k = 1, v = 2 };

// dst[r * pitch + c] = part `which` of tokens [t0, t0 + rows) (ReLU'd for q and k), zeros past the last token.
// With `ones_column` (v only), column d is 1 for real tokens: the v' = [v, 1] of the spec.
template <typename T, typename A>
__device__ void load_part(A* dst, int pitch, const T* head, const QkvLayout& s, Part which, int64_t t0, int rows,
                          bool ones_column = false) {
  const int d = static_cast<int>(s.head_dim);
  const int64_t stride = 3 * s.channels;
  const T* base = head + static_cast<int64_t>(which) * d;
  for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    A v = A(0);
    if (t0 + r < s.tokens) {
      v = static_cast<A>(to_compute(base[(t0 + r) * stride + c]));
      if (which != Part::v && v < A(0)) v = A(0);
    }
    dst[r * pitch + c] = v;
  }
  if (ones_column)
    for (int r = threadIdx.x; r < rows; r += blockDim.x) dst[r * pitch + d] = t0 + r < s.tokens ? A(1) : A(0);
}

// dst[r * pitch + c] = the [tokens, C] map `src` (output layout) for head channels at `head`, zeros past the end.
template <typename T, typename A>
__device__ void load_output_rows(A* dst, int pitch, const T* head, const QkvLayout& s, int64_t t0, int rows) {
  const int d = static_cast<int>(s.head_dim);
  for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    dst[r * pitch + c] = t0 + r < s.tokens ? static_cast<A>(to_compute(head[(t0 + r) * s.channels + c])) : A(0);
  }
}

// out[i * out_pitch + j] (+)= sum_{p < depth} lhs[i * l_row + p * l_col] * rhs[p * r_row + j * r_col] for i < rows,
// j < cols, all operands in shared memory. Each thread owns 4 x 4 outputs at rows bi + x * row_blocks and columns
// bj + y * col_blocks (so neighbouring threads read neighbouring columns); the ownership is the same on every call,
// so accumulating calls need no synchronisation between them.
template <typename A>
__device__ void block_product(A* out, int out_pitch, const A* lhs, int l_row, int l_col, const A* rhs, int r_row,
                              int r_col, int rows, int cols, int depth, bool accumulate) {
  const int row_blocks = (rows + 3) / 4, col_blocks = (cols + 3) / 4;
  for (int blk = threadIdx.x; blk < row_blocks * col_blocks; blk += blockDim.x) {
    const int bi = blk / col_blocks, bj = blk % col_blocks;
    A acc[4][4];
#pragma unroll
    for (int x = 0; x < 4; ++x)
#pragma unroll
      for (int y = 0; y < 4; ++y) acc[x][y] = A(0);
    for (int p = 0; p < depth; ++p) {
      A l[4], r[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int i = bi + x * row_blocks;
        l[x] = i < rows ? lhs[i * l_row + p * l_col] : A(0);
      }
#pragma unroll
      for (int y = 0; y < 4; ++y) {
        const int j = bj + y * col_blocks;
        r[y] = j < cols ? rhs[p * r_row + j * r_col] : A(0);
      }
#pragma unroll
      for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) acc[x][y] += l[x] * r[y];
    }
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const int i = bi + x * row_blocks;
      if (i >= rows) continue;
#pragma unroll
      for (int y = 0; y < 4; ++y) {
        const int j = bj + y * col_blocks;
        if (j >= cols) continue;
        A& slot = out[i * out_pitch + j];
        slot = accumulate ? slot + acc[x][y] : acc[x][y];
      }
    }
  }
}

template <typename A>
__device__ __forceinline__ A* shared_buffer() {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  return reinterpret_cast<A*>(shared_raw);
}

}  // namespace dcae::ops::cuda::linear_detail
