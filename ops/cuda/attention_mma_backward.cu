// Scaled dot-product attention backward on tensor cores (see attention_mma.cu), deterministic without atomics:
// a kernel per query tile recomputes P from the saved log-sum-exp, sums D_i = sum_j P_ij dP_ij, then forms
// dS = P (dP - D) for dq (and dscores); a kernel per key tile recomputes P and dS for dk and dv with D from the first.
#include "ops/cuda/attention_mma_common.cuh"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;
using namespace mma_detail;

namespace {

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

}  // namespace

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
