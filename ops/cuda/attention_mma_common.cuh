// Shared pieces of the tensor-core attention kernels (attention_mma.cu, attention_mma_backward.cu): tile shapes,
// global-to-shared tile loads, operand slabs, quad reductions, the probability of a score, output stores and the
// launch helpers.
#pragma once
#include <cuda_runtime.h>

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/attention_common.h"
#include "ops/cuda/mma_fragments.cuh"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;
using namespace mma_detail;

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarp = 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kForwardRows = 64, kForwardKeys = 64;    // forward tile: 4 warps x 16 query rows, 64 keys per step
constexpr int kRowsKernelRows = 64, kRowsKernelKeys = 32;  // backward, per query tile
constexpr int kColsKernelKeys = 64, kColsKernelRows = 32;  // backward, per key tile

template <int kD>
constexpr int kPitch = kD + 8;  // shared row pitch in elements: the 16-byte pad makes ldmatrix rows conflict-free

// tile[r][0, kD) = slab rows [row0, row0 + rows), zeros past `limit` rows and past `cols` (a multiple of 8) columns.
template <typename T, int kD>
__device__ __forceinline__ void load_tile(T* tile, const T* slab, int64_t stride, int64_t row0, int rows,
                                          int64_t limit, int cols) {
  constexpr int kChunks = kD / 8;
  for (int e = threadIdx.x; e < rows * kChunks; e += kThreads) {
    const int r = e / kChunks, c = (e % kChunks) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < limit && c < cols) v = *reinterpret_cast<const uint4*>(slab + (row0 + r) * stride + c);
    *reinterpret_cast<uint4*>(tile + r * kPitch<kD> + c) = v;
  }
}

template <typename T>
__device__ __forceinline__ T* shared_tiles() {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  return reinterpret_cast<T*>(shared_raw);
}

template <typename T>
__device__ __forceinline__ const T* slab(const void* p, const Strides3& s, int64_t b, int64_t h) {
  return static_cast<const T*>(p) + b * s.b + h * s.h;
}

__device__ __forceinline__ const float* mask_slab(const AttentionParams& p, int64_t b, int64_t h) {
  return p.mask == nullptr ? nullptr
                           : static_cast<const float*>(p.mask) + b * p.mask_strides[0] + h * p.mask_strides[1];
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Stores 16 rows x kD accumulators (times `scale` per row half) as T into rows `rows` of a [., d] output.
template <typename T, int kD>
__device__ __forceinline__ void store_rows(T* out, int64_t d, const float (&acc)[kD / 8][4], const int64_t (&rows)[2],
                                           int64_t limit, const float (&scale)[2]) {
  const int t = lane_id() & 3;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= limit) continue;
#pragma unroll
    for (int nt = 0; nt < kD / 8; ++nt) {
      const int col = nt * 8 + 2 * t;
      if (col < d)
        *reinterpret_cast<uint32_t*>(out + rows[r] * d + col) =
            pack2<T>(acc[nt][2 * r] * scale[r], acc[nt][2 * r + 1] * scale[r]);
    }
  }
}

// Probability in natural units from a raw score accumulator: exp(scale s + mask - lse), 0 where lse2 (the
// log-sum-exp in log2 units) is -inf or the key is past the end.
__device__ __forceinline__ float probability(float s, float scale_log2, const float* mask, const AttentionParams& p,
                                             int64_t row, int64_t key, float lse2) {
  if (key >= p.lk || lse2 == -INFINITY) return 0.f;
  float x = s * scale_log2;
  if (mask != nullptr) x += mask[row * p.mask_strides[2] + key * p.mask_strides[3]] * kLog2e;
  return exp2f(x - lse2);
}

// Calls fn.template operator()<T, kD>() for the dtype and the padded head size.
template <typename Fn>
void visit_mma(DType dtype, int64_t d, Fn&& fn) {
  const auto with_dtype = [&]<typename T>() {
    if (d <= 32) return fn.template operator()<T, 32>();
    if (d <= 64) return fn.template operator()<T, 64>();
    if (d <= 80) return fn.template operator()<T, 80>();
    if (d <= 96) return fn.template operator()<T, 96>();
    return fn.template operator()<T, 128>();
  };
  if (dtype == DType::bf16) return with_dtype.template operator()<__nv_bfloat16>();
  return with_dtype.template operator()<__half>();
}

template <typename Kernel>
void launch(Kernel kernel, const char* name, dim3 grid, size_t bytes, StreamHandle stream, const AttentionParams& p) {
  if (grid.x == 0 || grid.y == 0) return;
  DCAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, kThreads, bytes, stream>>>(p);
  check_launch(name);
}

inline unsigned tiles(int64_t n, int tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

}  // namespace dcae::ops::cuda::attention_detail
