// Shared pieces of the tensor-core attention kernels (attention_mma.cu, attention_mma_backward.cu): the padded
// head sizes, shared-memory pitches, cp.async tile loads, the warp-level Q K^T-style product with a k8 tail for
// head sizes that are an odd multiple of 8, quad reductions, output stores and the launch helpers.
#pragma once
#include <cuda_runtime.h>

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/attention_common.h"
#include "ops/cuda/mma_fragments.cuh"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;
using namespace mma_detail;

constexpr int kWarp = 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Shared row pitch in elements for a head size kD (a multiple of 8): an odd number of 16-byte chunks, so the 8
// rows an ldmatrix reads (and the rows cp.async writes) fall on distinct banks without padding to a power of two.
__host__ __device__ constexpr int pitch_for(int d) { return ((d / 8) | 1) * 8; }

// Tile rows [row0, row0 + kRows) x columns [0, kD) of a [L, d] slab (row stride `stride`) into shared memory with
// pitch kP, asynchronously; rows past `limit` and columns past `cols` (a multiple of 8) become zeros.
template <typename T, int kD, int kRows, int kThreads>
__device__ __forceinline__ void async_tile(T* tile, const T* slab, int64_t stride, int64_t row0, int64_t limit,
                                           int cols) {
  constexpr int kChunks = kD / 8, kP = pitch_for(kD);
#pragma unroll 2
  for (int e = threadIdx.x; e < kRows * kChunks; e += kThreads) {
    const int r = e / kChunks, c = (e % kChunks) * 8;
    const bool inside = row0 + r < limit && c < cols;
    cp_async_16(tile + r * kP + c, inside ? slab + (row0 + r) * stride + c : slab, inside ? 16 : 0);
  }
}

// acc[m][n] += A_m B_n^T over k in [0, kD) for the warp: A = rows [a_row0 + 16 m, +16) of tile `a` (row-major
// [row][k]), B = rows [16 * np, +16) of tile `b` (stored [n][k]), kM m-tiles and kN n-tiles of 8. Head sizes
// that are an odd multiple of 8 finish with one m16n8k8 step instead of padding to 16.
template <typename T, int kD, int kM, int kN>
__device__ __forceinline__ void warp_gemm_nt(float (&acc)[kM][kN][4], const T* a, int a_row0, const T* b) {
  constexpr int kP = pitch_for(kD);
  static_assert(kN % 4 == 0, "n-tiles come in fours for the k8 tail");
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    uint32_t af[kM][4];
#pragma unroll
    for (int m = 0; m < kM; ++m) load_a(af[m], a, kP, a_row0 + 16 * m, ks * 16);
#pragma unroll
    for (int np = 0; np < kN / 2; ++np) {
      uint32_t bf[4];
      load_b_nk(bf, b, kP, np * 16, ks * 16);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        mma<T>(acc[m][2 * np], af[m], bf[0], bf[1]);
        mma<T>(acc[m][2 * np + 1], af[m], bf[2], bf[3]);
      }
    }
  }
  if constexpr (kD % 16 != 0) {
    constexpr int k0 = kD / 16 * 16;
    uint32_t af[kM][2];
#pragma unroll
    for (int m = 0; m < kM; ++m) load_a_k8(af[m], a, kP, a_row0 + 16 * m, k0);
#pragma unroll
    for (int n4 = 0; n4 < kN / 4; ++n4) {
      uint32_t bf[4];
      load_b4_nk_k8(bf, b, kP, n4 * 32, k0);
#pragma unroll
      for (int m = 0; m < kM; ++m)
#pragma unroll
        for (int i = 0; i < 4; ++i) mma_k8<T>(acc[m][4 * n4 + i], af[m], bf[i]);
    }
  }
}

// acc[m][nt] += A_m B over 16 k for kM m-tiles: A_m = the fragments `af[m]` (16 rows x 16 k), B = rows [k0, k0 + 16)
// of tile `b` stored [k][n] (pitch for kD), every n-tile of the head size (kD / 8, the last one alone when odd).
// Each B fragment is read from shared memory once for all m-tiles.
template <typename T, int kD, int kM>
__device__ __forceinline__ void warp_gemm_nn_step(float (&acc)[kM][kD / 8][4], const uint32_t (&af)[kM][4],
                                                  const T* b, int k0) {
  constexpr int kP = pitch_for(kD), kN = kD / 8;
#pragma unroll
  for (int np = 0; np < kN / 2; ++np) {
    uint32_t bf[4];
    load_b_kn(bf, b, kP, k0, np * 16);
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      mma<T>(acc[m][2 * np], af[m], bf[0], bf[1]);
      mma<T>(acc[m][2 * np + 1], af[m], bf[2], bf[3]);
    }
  }
  if constexpr (kN % 2 != 0) {
    uint32_t bf[2];
    load_b1_kn(bf, b, kP, k0, (kN - 1) * 8);
#pragma unroll
    for (int m = 0; m < kM; ++m) mma<T>(acc[m][kN - 1], af[m], bf[0], bf[1]);
  }
}

// 2^x on the special-function unit, denormals flushed (exp2(-inf) = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
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

// Calls fn.template operator()<T, kD>() for the dtype and the padded head size: 72 (the DiT head) runs unpadded
// with a k8 tail, others pad with zeros to the next of 32, 64, 80, 96, 128.
template <typename Fn>
void visit_mma(DType dtype, int64_t d, Fn&& fn) {
  const auto with_dtype = [&]<typename T>() {
    if (d <= 32) return fn.template operator()<T, 32>();
    if (d <= 64) return fn.template operator()<T, 64>();
    if (d <= 72) return fn.template operator()<T, 72>();
    if (d <= 80) return fn.template operator()<T, 80>();
    if (d <= 96) return fn.template operator()<T, 96>();
    return fn.template operator()<T, 128>();
  };
  if (dtype == DType::bf16) return with_dtype.template operator()<__nv_bfloat16>();
  return with_dtype.template operator()<__half>();
}

// A 1-D grid of `blocks` blocks, checked against CUDA's limit (2^31 - 1).
inline unsigned grid_blocks(int64_t blocks, const char* kernel) {
  DCAE_CHECK(blocks <= 0x7fffffff, kernel, ": ", blocks,
             " blocks exceed CUDA's grid limit of 2^31 - 1 (attention over fewer batch * heads at a time fits)");
  return static_cast<unsigned>(blocks);
}

template <int kThreads, typename Kernel>
void launch(Kernel kernel, const char* name, dim3 grid, size_t bytes, StreamHandle stream, const AttentionParams& p) {
  if (grid.x == 0 || grid.y == 0) return;
  DCAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, kThreads, bytes, stream>>>(p);
  check_launch(name);
}

__host__ __device__ inline unsigned tiles(int64_t n, int tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

}  // namespace dcae::ops::cuda::attention_detail
