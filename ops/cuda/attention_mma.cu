// Scaled dot-product attention on tensor cores for bf16/f16 (FlashAttention-2 style), head size D == Dv, D % 8 == 0,
// D <= 128 (padded with zeros to kD in {32, 64, 80, 96, 128}). Each warp owns 16 rows of a tile and runs
// mma.sync.m16n8k16 with fp32 accumulators; operands come from shared memory through ldmatrix (.trans where the
// operand is stored k-major). Fragment layouts (PTX ISA, m16n8k16): lane = 4 * g + t;
//   A (16x16): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C (16x8):  c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1)
// so the accumulators of two adjacent n-tiles are exactly an A operand (probabilities and dS feed the next mma).
// Scores are kept in log2 units (exp2f); a row whose scores are all -inf keeps zeros and log-sum-exp -inf.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/attention_common.h"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;

namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarp = 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kForwardRows = 64, kForwardKeys = 64;    // forward tile: 4 warps x 16 query rows, 64 keys per step
constexpr int kRowsKernelRows = 64, kRowsKernelKeys = 32;  // backward, per query tile
constexpr int kColsKernelKeys = 64, kColsKernelRows = 32;  // backward, per key tile

template <int kD>
constexpr int kPitch = kD + 8;  // shared row pitch in elements: the 16-byte pad makes ldmatrix rows conflict-free

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

// c += a * b for one 16x8x16 tile.
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats rounded to T, `lo` in the low half (the lower column).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t bits;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&bits, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&bits, &v, 4);
  }
  return bits;
}

__device__ __forceinline__ int lane_id() { return threadIdx.x % kWarp; }

// A operand: rows [row0, row0 + 16) x k [k0, k0 + 16) of a row-major tile.
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int pitch, int row0, int k0) {
  const int lane = lane_id();
  ldmatrix_x4(a, tile + (row0 + (lane & 15)) * pitch + k0 + (lane >> 4) * 8);
}

// B operands of the n-tiles n0 and n0 + 8 (b[0..1] and b[2..3]) for k [k0, k0 + 16), from a tile stored [n][k].
template <typename T>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const T* tile, int pitch, int n0, int k0) {
  const int lane = lane_id();
  ldmatrix_x4(b, tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * pitch + k0 + ((lane >> 3) & 1) * 8);
}

// The same from a tile stored [k][n] (transposed by ldmatrix).
template <typename T>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const T* tile, int pitch, int k0, int n0) {
  const int lane = lane_id();
  ldmatrix_x4_trans(b, tile + (k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * pitch + n0 + ((lane >> 4) << 3));
}

// The A operand (16 rows x 16 k) made of two accumulator n-tiles, rounded to T.
template <typename T>
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<T>(lo[0], lo[1]);
  a[1] = pack2<T>(lo[2], lo[3]);
  a[2] = pack2<T>(hi[0], hi[1]);
  a[3] = pack2<T>(hi[2], hi[3]);
}

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

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) attention_forward_mma_kernel(AttentionParams p) {
  constexpr int kP = kPitch<kD>, kSteps = kD / 16, kTiles = kD / 8, kKeyTiles = kForwardKeys / 8;
  T* sq = shared_tiles<T>();
  T* sk = sq + kForwardRows * kP;
  T* sv = sk + kForwardKeys * kP;
  const int warp = threadIdx.x / kWarp, lane = lane_id(), g = lane >> 2, t = lane & 3;
  const int64_t bh = blockIdx.x, b = bh / p.heads, h = bh % p.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kForwardRows;
  const int d = static_cast<int>(p.d);
  const T* q = slab<T>(p.q, p.q_strides, b, h);
  const T* k = slab<T>(p.k, p.k_strides, b, h);
  const T* v = slab<T>(p.v, p.v_strides, b, h);
  const float* mask = mask_slab(p, b, h);
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;

  load_tile<T, kD>(sq, q, p.q_strides.l, i0, kForwardRows, p.lq, d);
  __syncthreads();
  uint32_t qa[kSteps][4];
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) load_a(qa[ks], sq, kP, warp * 16, ks * 16);
  float o[kTiles][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  const int64_t rows[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};

  for (int64_t j0 = 0; j0 < p.lk; j0 += kForwardKeys) {
    __syncthreads();  // every warp is done with the previous K/V tile
    load_tile<T, kD>(sk, k, p.k_strides.l, j0, kForwardKeys, p.lk, d);
    load_tile<T, kD>(sv, v, p.v_strides.l, j0, kForwardKeys, p.lk, d);
    __syncthreads();
    float s[kKeyTiles][4] = {};
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks)
#pragma unroll
      for (int np = 0; np < kKeyTiles / 2; ++np) {
        uint32_t kb[4];
        load_b_nk(kb, sk, kP, np * 16, ks * 16);
        mma<T>(s[2 * np], qa[ks], kb[0], kb[1]);
        mma<T>(s[2 * np + 1], qa[ks], kb[2], kb[3]);
      }
    float tile_max[2] = {row_max[0], row_max[1]};
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t col = j0 + nt * 8 + 2 * t + (e & 1);
        float x = s[nt][e] * scale_log2;
        if (col >= p.lk) x = -INFINITY;
        else if (mask != nullptr && rows[r] < p.lq) x += mask[rows[r] * p.mask_strides[2] + col * p.mask_strides[3]] * kLog2e;
        s[nt][e] = x;
        tile_max[r] = fmaxf(tile_max[r], x);
      }
    float alpha[2], base[2], tile_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = quad_max(tile_max[r]);
      base[r] = tile_max[r] == -INFINITY ? 0.f : tile_max[r];  // all -inf so far: probabilities 0, not NaN
      alpha[r] = exp2f(row_max[r] - base[r]);
      row_max[r] = tile_max[r];
    }
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - base[e >> 1]);
        tile_sum[e >> 1] += s[nt][e];
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * alpha[r] + quad_sum(tile_sum[r]);
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) {
      o[nt][0] *= alpha[0];
      o[nt][1] *= alpha[0];
      o[nt][2] *= alpha[1];
      o[nt][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < kForwardKeys / 16; ++kk) {
      uint32_t pa[4];
      accumulators_to_a<T>(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < kD / 16; ++dp) {
        uint32_t vb[4];
        load_b_kn(vb, sv, kP, kk * 16, dp * 16);
        mma<T>(o[2 * dp], pa, vb[0], vb[1]);
        mma<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
  }
  const float inverse[2] = {row_sum[0] > 0.f ? 1.f / row_sum[0] : 0.f, row_sum[1] > 0.f ? 1.f / row_sum[1] : 0.f};
  store_rows<T, kD>(static_cast<T*>(p.out) + bh * p.lq * d, d, o, rows, p.lq, inverse);
  if (t == 0) {
    float* lse = static_cast<float*>(p.lse) + bh * p.lq;
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (rows[r] < p.lq) lse[rows[r]] = row_max[r] == -INFINITY ? -INFINITY : (row_max[r] + log2f(row_sum[r])) * kLn2;
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

// Per query tile (4 warps x 16 rows): pass 0 sums D_i = sum_j P_ij dP_ij, pass 1 forms dS = P (dP - D) and
// dq = scale dS K. Writes dq, D (for the key-tile kernel) and dscores when asked for.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) attention_backward_rows_mma_kernel(AttentionParams p) {
  constexpr int kP = kPitch<kD>, kSteps = kD / 16, kTiles = kD / 8, kKeyTiles = kRowsKernelKeys / 8;
  T* sq = shared_tiles<T>();
  T* sg = sq + kRowsKernelRows * kP;
  T* sk = sg + kRowsKernelRows * kP;
  T* sv = sk + kRowsKernelKeys * kP;
  const int warp = threadIdx.x / kWarp, lane = lane_id(), g = lane >> 2, t = lane & 3;
  const int64_t bh = blockIdx.x, b = bh / p.heads, h = bh % p.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kRowsKernelRows;
  const int d = static_cast<int>(p.d);
  const T* k = slab<T>(p.k, p.k_strides, b, h);
  const T* v = slab<T>(p.v, p.v_strides, b, h);
  const float* mask = mask_slab(p, b, h);
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;
  float* dscores = static_cast<float*>(p.dscores);

  load_tile<T, kD>(sq, slab<T>(p.q, p.q_strides, b, h), p.q_strides.l, i0, kRowsKernelRows, p.lq, d);
  load_tile<T, kD>(sg, slab<T>(p.grad, p.grad_strides, b, h), p.grad_strides.l, i0, kRowsKernelRows, p.lq, d);
  __syncthreads();
  uint32_t qa[kSteps][4], ga[kSteps][4];
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    load_a(qa[ks], sq, kP, warp * 16, ks * 16);
    load_a(ga[ks], sg, kP, warp * 16, ks * 16);
  }
  const int64_t rows[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
  const float* lse = static_cast<const float*>(p.lse) + bh * p.lq;
  float lse2[2], di[2] = {0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 2; ++r) lse2[r] = rows[r] < p.lq ? lse[rows[r]] * kLog2e : -INFINITY;
  float dq[kTiles][4] = {};

  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t j0 = 0; j0 < p.lk; j0 += kRowsKernelKeys) {
      __syncthreads();
      load_tile<T, kD>(sk, k, p.k_strides.l, j0, kRowsKernelKeys, p.lk, d);
      load_tile<T, kD>(sv, v, p.v_strides.l, j0, kRowsKernelKeys, p.lk, d);
      __syncthreads();
      float s[kKeyTiles][4] = {}, dp[kKeyTiles][4] = {};  // scores and dP = dO V^T
#pragma unroll
      for (int ks = 0; ks < kSteps; ++ks)
#pragma unroll
        for (int np = 0; np < kKeyTiles / 2; ++np) {
          uint32_t kb[4], vb[4];
          load_b_nk(kb, sk, kP, np * 16, ks * 16);
          load_b_nk(vb, sv, kP, np * 16, ks * 16);
          mma<T>(s[2 * np], qa[ks], kb[0], kb[1]);
          mma<T>(s[2 * np + 1], qa[ks], kb[2], kb[3]);
          mma<T>(dp[2 * np], ga[ks], vb[0], vb[1]);
          mma<T>(dp[2 * np + 1], ga[ks], vb[2], vb[3]);
        }
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1;
          const int64_t key = j0 + nt * 8 + 2 * t + (e & 1);
          const float prob = probability(s[nt][e], scale_log2, mask, p, rows[r], key, lse2[r]);
          if (pass == 0) {
            di[r] += prob * dp[nt][e];
          } else {
            s[nt][e] = prob * (dp[nt][e] - di[r]);
            if (dscores != nullptr && rows[r] < p.lq && key < p.lk) dscores[(bh * p.lq + rows[r]) * p.lk + key] = s[nt][e];
          }
        }
      if (pass == 0) continue;
#pragma unroll
      for (int kk = 0; kk < kRowsKernelKeys / 16; ++kk) {
        uint32_t sa[4];
        accumulators_to_a<T>(sa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int dt = 0; dt < kD / 16; ++dt) {
          uint32_t kb[4];
          load_b_kn(kb, sk, kP, kk * 16, dt * 16);
          mma<T>(dq[2 * dt], sa, kb[0], kb[1]);
          mma<T>(dq[2 * dt + 1], sa, kb[2], kb[3]);
        }
      }
    }
    if (pass == 0)
#pragma unroll
      for (int r = 0; r < 2; ++r) di[r] = quad_sum(di[r]);
  }
  const float scale[2] = {static_cast<float>(p.scale), static_cast<float>(p.scale)};
  store_rows<T, kD>(static_cast<T*>(p.dq) + bh * p.lq * d, d, dq, rows, p.lq, scale);
  if (t == 0) {
    float* di_out = static_cast<float*>(p.di) + bh * p.lq;
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (rows[r] < p.lq) di_out[rows[r]] = di[r];
  }
}

// Per key tile (4 warps x 16 keys), walking query tiles of 32: S^T = K Q^T, dP^T = V dO^T, then dv += P^T dO and
// dk += scale dS^T Q, with D from the rows kernel.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) attention_backward_cols_mma_kernel(AttentionParams p) {
  constexpr int kP = kPitch<kD>, kSteps = kD / 16, kTiles = kD / 8, kQueryTiles = kColsKernelRows / 8;
  T* sk = shared_tiles<T>();
  T* sv = sk + kColsKernelKeys * kP;
  T* sq = sv + kColsKernelKeys * kP;
  T* sg = sq + kColsKernelRows * kP;
  float* slse2 = reinterpret_cast<float*>(sg + kColsKernelRows * kP);
  float* sdi = slse2 + kColsKernelRows;
  const int warp = threadIdx.x / kWarp, lane = lane_id(), g = lane >> 2, t = lane & 3;
  const int64_t bh = blockIdx.x, b = bh / p.heads, h = bh % p.heads;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * kColsKernelKeys;
  const int d = static_cast<int>(p.d);
  const T* q = slab<T>(p.q, p.q_strides, b, h);
  const T* grad = slab<T>(p.grad, p.grad_strides, b, h);
  const float* mask = mask_slab(p, b, h);
  const float* lse = static_cast<const float*>(p.lse) + bh * p.lq;
  const float* di = static_cast<const float*>(p.di) + bh * p.lq;
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;

  load_tile<T, kD>(sk, slab<T>(p.k, p.k_strides, b, h), p.k_strides.l, j0, kColsKernelKeys, p.lk, d);
  load_tile<T, kD>(sv, slab<T>(p.v, p.v_strides, b, h), p.v_strides.l, j0, kColsKernelKeys, p.lk, d);
  const int64_t keys[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};
  float dk[kTiles][4] = {}, dv[kTiles][4] = {};

  for (int64_t i0 = 0; i0 < p.lq; i0 += kColsKernelRows) {
    __syncthreads();
    load_tile<T, kD>(sq, q, p.q_strides.l, i0, kColsKernelRows, p.lq, d);
    load_tile<T, kD>(sg, grad, p.grad_strides.l, i0, kColsKernelRows, p.lq, d);
    for (int r = threadIdx.x; r < kColsKernelRows; r += kThreads) {
      slse2[r] = i0 + r < p.lq ? lse[i0 + r] * kLog2e : -INFINITY;
      sdi[r] = i0 + r < p.lq ? di[i0 + r] : 0.f;
    }
    __syncthreads();
    float st[kQueryTiles][4] = {}, dpt[kQueryTiles][4] = {};  // [16 keys x 32 queries]
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      uint32_t ka[4], va[4];
      load_a(ka, sk, kP, warp * 16, ks * 16);
      load_a(va, sv, kP, warp * 16, ks * 16);
#pragma unroll
      for (int np = 0; np < kQueryTiles / 2; ++np) {
        uint32_t qb[4], gb[4];
        load_b_nk(qb, sq, kP, np * 16, ks * 16);
        load_b_nk(gb, sg, kP, np * 16, ks * 16);
        mma<T>(st[2 * np], ka, qb[0], qb[1]);
        mma<T>(st[2 * np + 1], ka, qb[2], qb[3]);
        mma<T>(dpt[2 * np], va, gb[0], gb[1]);
        mma<T>(dpt[2 * np + 1], va, gb[2], gb[3]);
      }
    }
#pragma unroll
    for (int nt = 0; nt < kQueryTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int local = nt * 8 + 2 * t + (e & 1);
        const float prob = probability(st[nt][e], scale_log2, mask, p, i0 + local, keys[e >> 1], slse2[local]);
        st[nt][e] = prob;
        dpt[nt][e] = prob * (dpt[nt][e] - sdi[local]);
      }
#pragma unroll
    for (int kk = 0; kk < kColsKernelRows / 16; ++kk) {
      uint32_t pa[4], sa[4];
      accumulators_to_a<T>(pa, st[2 * kk], st[2 * kk + 1]);
      accumulators_to_a<T>(sa, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
      for (int dt = 0; dt < kD / 16; ++dt) {
        uint32_t gb[4], qb[4];
        load_b_kn(gb, sg, kP, kk * 16, dt * 16);
        load_b_kn(qb, sq, kP, kk * 16, dt * 16);
        mma<T>(dv[2 * dt], pa, gb[0], gb[1]);
        mma<T>(dv[2 * dt + 1], pa, gb[2], gb[3]);
        mma<T>(dk[2 * dt], sa, qb[0], qb[1]);
        mma<T>(dk[2 * dt + 1], sa, qb[2], qb[3]);
      }
    }
  }
  const float scale[2] = {static_cast<float>(p.scale), static_cast<float>(p.scale)};
  const float one[2] = {1.f, 1.f};
  store_rows<T, kD>(static_cast<T*>(p.dk) + bh * p.lk * d, d, dk, keys, p.lk, scale);
  store_rows<T, kD>(static_cast<T*>(p.dv) + bh * p.lk * d, d, dv, keys, p.lk, one);
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

unsigned tiles(int64_t n, int tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

}  // namespace

bool mma_attention_supported(DType dtype, int64_t d, int64_t dv) {
  return (dtype == DType::bf16 || dtype == DType::f16) && d == dv && d % 8 == 0 && d > 0 && d <= 128;
}

void mma_attention_forward(const AttentionParams& p, DType dtype, StreamHandle stream) {
  visit_mma(dtype, p.d, [&]<typename T, int kD>() {
    const size_t bytes = static_cast<size_t>(kForwardRows + 2 * kForwardKeys) * kPitch<kD> * sizeof(T);
    launch(attention_forward_mma_kernel<T, kD>, "attention_forward_mma_kernel",
           dim3(static_cast<unsigned>(p.batch * p.heads), tiles(p.lq, kForwardRows)), bytes, stream, p);
  });
}

void mma_attention_backward(const AttentionParams& p, DType dtype, StreamHandle stream) {
  visit_mma(dtype, p.d, [&]<typename T, int kD>() {
    const unsigned bh = static_cast<unsigned>(p.batch * p.heads);
    const size_t rows_bytes = static_cast<size_t>(2 * kRowsKernelRows + 2 * kRowsKernelKeys) * kPitch<kD> * sizeof(T);
    launch(attention_backward_rows_mma_kernel<T, kD>, "attention_backward_rows_mma_kernel",
           dim3(bh, tiles(p.lq, kRowsKernelRows)), rows_bytes, stream, p);
    const size_t cols_bytes = static_cast<size_t>(2 * kColsKernelKeys + 2 * kColsKernelRows) * kPitch<kD> * sizeof(T) +
                              2 * kColsKernelRows * sizeof(float);
    launch(attention_backward_cols_mma_kernel<T, kD>, "attention_backward_cols_mma_kernel",
           dim3(bh, tiles(p.lk, kColsKernelKeys)), cols_bytes, stream, p);
  });
}

}  // namespace dcae::ops::cuda::attention_detail
