// Scaled dot-product attention forward on tensor cores for bf16/f16 (FlashAttention-2 style), head size D == Dv,
// D % 8 == 0, D <= 128 (72 runs as is with a k8 tail; others pad with zeros to 32, 64, 80, 96 or 128).
//
// A block of 4 warps owns 128 query rows (32 per warp: two m16 tiles share every K/V fragment read from shared
// memory) and walks the keys in tiles of 64. K and V tiles are double-buffered through cp.async: the next tile
// loads while this one is computed, one barrier per tile. Scores stay in registers
// in log2 units (exp2f) through the online softmax, and the probabilities, rounded to the input dtype as
// FlashAttention-2 does, are the A operand of P V straight from the accumulators. A row whose scores are all -inf
// keeps zeros and log-sum-exp -inf. The backward is in attention_mma_backward.cu.
#include "ops/cuda/attention_mma_common.cuh"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;
using namespace mma_detail;

namespace {

constexpr int kForwardWarps = 4, kForwardThreads = kForwardWarps * kWarp;
constexpr int kForwardRows = 32 * kForwardWarps, kForwardKeys = 64;
constexpr int kForwardKeyTiles = kForwardKeys / 8;

template <int kD>
constexpr size_t forward_shared_bytes() {
  return static_cast<size_t>(kForwardRows + 4 * kForwardKeys) * pitch_for(kD) * 2;
}

// Scores of one 64-key tile for the warp's 2 x 16 rows, in log2 units with the mask added and keys past the end
// at -inf. Row and key indices within one (batch, head) slab fit in int.
template <bool kMasked>
__device__ __forceinline__ void scale_and_mask(float (&s)[2][kForwardKeyTiles][4], const AttentionParams& p,
                                               const float* mask, float scale_log2, const int (&rows)[2][2],
                                               int j0) {
  const int t = lane_id() & 3, lq = static_cast<int>(p.lq), lk = static_cast<int>(p.lk);
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int nt = 0; nt < kForwardKeyTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[m][nt][e] *= scale_log2;
  if constexpr (kMasked) {
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int nt = 0; nt < kForwardKeyTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = j0 + nt * 8 + 2 * t + (e & 1), row = rows[m][e >> 1];
          if (row < lq && col < lk) s[m][nt][e] += mask[row * p.mask_strides[2] + col * p.mask_strides[3]] * kLog2e;
        }
  }
  if (j0 + kForwardKeys > lk) {
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int nt = 0; nt < kForwardKeyTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (j0 + nt * 8 + 2 * t + (e & 1) >= lk) s[m][nt][e] = -INFINITY;
  }
}

template <typename T, int kD, bool kMasked>
__global__ void __launch_bounds__(kForwardThreads, 2) attention_forward_mma_kernel(AttentionParams p) {
  constexpr int kP = pitch_for(kD), kN = kD / 8;
  // Stage s: K at sk + s * kStage, V at sv + s * kStage.
  constexpr int kStage = 2 * kForwardKeys * kP;
  T* sq = shared_tiles<T>();
  T* const sk = sq + kForwardRows * kP;
  T* const sv = sk + kForwardKeys * kP;
  const int warp = threadIdx.x / kWarp, lane = lane_id(), g = lane >> 2, t = lane & 3;
  // One flat grid, query tiles fastest: the blocks of one head run together and share its K and V through L2.
  const int64_t query_tiles = tiles(p.lq, kForwardRows);
  const int64_t bh = blockIdx.x / query_tiles, b = bh / p.heads, h = bh % p.heads;
  const int64_t i0 = blockIdx.x % query_tiles * kForwardRows;
  const int d = static_cast<int>(p.d);
  const T* q = slab<T>(p.q, p.q_strides, b, h);
  const T* k = slab<T>(p.k, p.k_strides, b, h);
  const T* v = slab<T>(p.v, p.v_strides, b, h);
  const float* mask = mask_slab(p, b, h);
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;
  const int warp_row0 = warp * 32;
  const bool active = i0 + warp_row0 < p.lq;  // warps past the last query only help load
  int rows[2][2];  // within the (batch, head) slab
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    rows[m][0] = static_cast<int>(i0) + warp_row0 + 16 * m + g;
    rows[m][1] = rows[m][0] + 8;
  }

  async_tile<T, kD, kForwardRows, kForwardThreads>(sq, q, p.q_strides.l, i0, p.lq, d);
  async_tile<T, kD, kForwardKeys, kForwardThreads>(sk, k, p.k_strides.l, 0, p.lk, d);
  async_tile<T, kD, kForwardKeys, kForwardThreads>(sv, v, p.v_strides.l, 0, p.lk, d);
  cp_async_commit();

  float o[2][kN][4] = {};
  float row_max[2][2], row_sum[2][2] = {};
#pragma unroll
  for (int m = 0; m < 2; ++m) row_max[m][0] = row_max[m][1] = -INFINITY;
  const int key_tiles = static_cast<int>(tiles(p.lk, kForwardKeys));
  for (int j = 0; j < key_tiles; ++j) {
    const int stage = j & 1;
    const int64_t j0 = static_cast<int64_t>(j) * kForwardKeys;
    cp_async_wait<0>();  // K and V of this tile (issued a whole tile ago) landed for this thread
    __syncthreads();     // ... for every thread, and every warp is done with the other stage
    if (j + 1 < key_tiles) {
      T* const next_k = sk + (stage ^ 1) * kStage;
      async_tile<T, kD, kForwardKeys, kForwardThreads>(next_k, k, p.k_strides.l, j0 + kForwardKeys, p.lk, d);
      async_tile<T, kD, kForwardKeys, kForwardThreads>(next_k + kForwardKeys * kP, v, p.v_strides.l,
                                                      j0 + kForwardKeys, p.lk, d);
    }
    cp_async_commit();
    if (!active) continue;
    float s[2][kForwardKeyTiles][4] = {};
    warp_gemm_nt<T, kD, 2, kForwardKeyTiles>(s, sq, warp_row0, sk + stage * kStage);
    scale_and_mask<kMasked>(s, p, mask, scale_log2, rows, static_cast<int>(j0));
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float tile_max = row_max[m][r];
#pragma unroll
        for (int nt = 0; nt < kForwardKeyTiles; ++nt)
          tile_max = fmaxf(tile_max, fmaxf(s[m][nt][2 * r], s[m][nt][2 * r + 1]));
        tile_max = quad_max(tile_max);
        const float base = tile_max == -INFINITY ? 0.f : tile_max;  // all -inf so far: probabilities 0, not NaN
        const float alpha = fast_exp2(row_max[m][r] - base);
        row_max[m][r] = tile_max;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kForwardKeyTiles; ++nt) {
          s[m][nt][2 * r] = fast_exp2(s[m][nt][2 * r] - base);
          s[m][nt][2 * r + 1] = fast_exp2(s[m][nt][2 * r + 1] - base);
          sum += s[m][nt][2 * r] + s[m][nt][2 * r + 1];
        }
        row_sum[m][r] = row_sum[m][r] * alpha + sum;  // per-thread partial, summed over the quad at the end
#pragma unroll
        for (int nt = 0; nt < kN; ++nt) {
          o[m][nt][2 * r] *= alpha;
          o[m][nt][2 * r + 1] *= alpha;
        }
      }
#pragma unroll
    for (int kk = 0; kk < kForwardKeys / 16; ++kk) {
      uint32_t pa[2][4];
#pragma unroll
      for (int m = 0; m < 2; ++m) accumulators_to_a<T>(pa[m], s[m][2 * kk], s[m][2 * kk + 1]);
      warp_gemm_nn_step<T, kD, 2>(o, pa, sv + stage * kStage, kk * 16);
    }
  }
  cp_async_wait<0>();
  if (!active) return;
  T* out = static_cast<T*>(p.out) + bh * p.lq * d;
  float* lse = static_cast<float*>(p.lse) + bh * p.lq;
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    float inverse[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float sum = quad_sum(row_sum[m][r]);
      inverse[r] = sum > 0.f ? 1.f / sum : 0.f;
      if (t == 0 && rows[m][r] < p.lq)
        lse[rows[m][r]] = row_max[m][r] == -INFINITY ? -INFINITY : (row_max[m][r] + log2f(sum)) * kLn2;
    }
    const int64_t out_rows[2] = {rows[m][0], rows[m][1]};
    store_rows<T, kD>(out, d, o[m], out_rows, p.lq, inverse);
  }
}

}  // namespace

bool mma_attention_supported(DType dtype, int64_t d, int64_t dv) {
  return (dtype == DType::bf16 || dtype == DType::f16) && d == dv && d % 8 == 0 && d > 0 && d <= 128;
}

void mma_attention_forward(const AttentionParams& p, DType dtype, StreamHandle stream) {
  visit_mma(dtype, p.d, [&]<typename T, int kD>() {
    const auto kernel = p.mask != nullptr ? attention_forward_mma_kernel<T, kD, true>
                                          : attention_forward_mma_kernel<T, kD, false>;
    launch<kForwardThreads>(kernel, "attention_forward_mma_kernel",
                            dim3(grid_blocks(p.batch * p.heads * tiles(p.lq, kForwardRows),
                                             "attention_forward_mma_kernel")),
                            forward_shared_bytes<kD>(), stream, p);
  });
}

}  // namespace dcae::ops::cuda::attention_detail
