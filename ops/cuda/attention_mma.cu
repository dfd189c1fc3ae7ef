// Scaled dot-product attention forward on tensor cores for bf16/f16 (FlashAttention-2 style), head size D == Dv,
// D % 8 == 0, D <= 128 (padded with zeros to kD in {32, 64, 80, 96, 128}). Each warp owns 16 query rows of the
// block's 64 and runs mma.sync.m16n8k16 with fp32 accumulators (ops/cuda/mma_fragments.cuh); operands come from
// shared memory through ldmatrix (.trans where the operand is stored k-major). The score accumulators feed the P V
// product directly as probabilities, rounded to the input dtype as FlashAttention-2 does. Scores are kept in log2
// units (exp2f); a row whose scores are all -inf keeps zeros and log-sum-exp -inf. The backward is in
// attention_mma_backward.cu.
#include "ops/cuda/attention_mma_common.cuh"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;
using namespace mma_detail;

namespace {

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

}  // namespace dcae::ops::cuda::attention_detail
