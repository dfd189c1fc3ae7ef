// Scaled dot-product attention backward on tensor cores (see attention_mma.cu), FlashAttention-2 style:
//   1. a row pass: D_i = sum_c dO_ic O_ic (fp32) and the log-sum-exp in log2 units (+inf for a fully masked row,
//      so its probabilities come out 0), both padded to whole query tiles;
//   2. a block of 8 warps per 128 keys (16 per warp) walks the query tiles of 64, double-buffered through cp.async:
//      S^T = K Q^T and dP^T = V dO^T, P = exp2(S scale log2e - lse2), dS = P (dP - D); dV += P^T dO and
//      dK += dS^T Q accumulate in registers, and dS goes through shared memory (double-buffered) for dQ = dS K,
//      which the next step computes beside its own scores and adds into an fp32 buffer with atomics (so dq's fp32
//      summation order varies from run to run). The blocks of one head are adjacent in the grid, so Q and dO come
//      from L2, and each starts its walk at a different query tile, so their atomics hit different rows;
//   3. dq = scale * the fp32 buffer, rounded to the input dtype.
#include "ops/cuda/attention_mma_common.cuh"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;
using namespace mma_detail;

namespace {

// A block of 8 warps owns 128 keys (16 per warp) and walks query tiles of 64 rows. (Measured on an H200 against
// 4-warp blocks of 64 keys, and against dq staged in shared memory and added with one bulk reduction per tile:
// both no faster.)
constexpr int kBackwardWarps = 8, kBackwardThreads = kBackwardWarps * kWarp, kBackwardKeys = 16 * kBackwardWarps;
constexpr int kBackwardRows = 64, kBackwardRowTiles = kBackwardRows / 8;
constexpr int kScoresPitch = pitch_for(kBackwardRows);  // dS^T in shared memory: [key][query]

template <int kD>
constexpr size_t backward_shared_bytes() {
  return static_cast<size_t>((2 * kBackwardKeys + 4 * kBackwardRows) * pitch_for(kD) +
                             2 * kBackwardKeys * kScoresPitch) *
             2 +
         4 * kBackwardRows * sizeof(float);
}

// One 8-thread group per query row (rows padded to whole tiles): D and lse2 (see the file comment).
template <typename T>
__global__ void attention_backward_rows_kernel(AttentionParams p) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 8;
  const int part = threadIdx.x & 7;
  if (row >= p.batch * p.heads * p.lq_padded) return;
  const int64_t bh = row / p.lq_padded, i = row % p.lq_padded, b = bh / p.heads, h = bh % p.heads;
  float dot = 0.f;
  if (i < p.lq) {
    const T* o = slab<T>(p.o, p.o_strides, b, h) + i * p.o_strides.l;
    const T* g = slab<T>(p.grad, p.grad_strides, b, h) + i * p.grad_strides.l;
    for (int c = part * 8; c < p.d; c += 64) {
      const uint4 ov = *reinterpret_cast<const uint4*>(o + c), gv = *reinterpret_cast<const uint4*>(g + c);
      const T* oe = reinterpret_cast<const T*>(&ov);
      const T* ge = reinterpret_cast<const T*>(&gv);
#pragma unroll
      for (int e = 0; e < 8; ++e) dot += static_cast<float>(oe[e]) * static_cast<float>(ge[e]);
    }
  }
  dot += __shfl_xor_sync(0xffffffffu, dot, 1);
  dot += __shfl_xor_sync(0xffffffffu, dot, 2);
  dot += __shfl_xor_sync(0xffffffffu, dot, 4);
  if (part != 0) return;
  float lse2 = INFINITY;  // padding rows and fully masked rows: every probability exp2(x - inf) = 0
  if (i < p.lq) {
    const float lse = static_cast<const float*>(p.lse)[bh * p.lq + i];
    if (lse != -INFINITY) lse2 = lse * kLog2e;
  }
  static_cast<float*>(p.di)[row] = dot;
  p.lse_log2[row] = lse2;
}

template <typename T, int kD, bool kMasked>
__global__ void __launch_bounds__(kBackwardThreads, 1) attention_backward_mma_kernel(AttentionParams p) {
  constexpr int kP = pitch_for(kD), kN = kD / 8;
  // dQ: warp w takes 16 query rows ((w % 4) * 16) and half of the head's n-tiles: the first kFirstTiles or the rest.
  constexpr int kFirstTiles = (kN + 1) / 2;
  T* sk = shared_tiles<T>();
  T* sv = sk + kBackwardKeys * kP;
  // Stage s of the query tiles: Q at sq + s * kStage, dO at sg + s * kStage.
  constexpr int kStage = 2 * kBackwardRows * kP;
  T* const sq = sv + kBackwardKeys * kP;
  T* const sg = sq + kBackwardRows * kP;
  T* sds = sv + (kBackwardKeys + 4 * kBackwardRows) * kP;
  constexpr int kScoresStage = kBackwardKeys * kScoresPitch;  // dS^T is double-buffered too
  float* slse = reinterpret_cast<float*>(sds + 2 * kScoresStage);  // [2][rows], log2 units
  float* sdi = slse + 2 * kBackwardRows;                                       // [2][rows]
  const int warp = threadIdx.x / kWarp, lane = lane_id(), g = lane >> 2, t = lane & 3;
  // One flat grid, key blocks fastest: the blocks of one head run together and share its Q and dO through L2.
  const int64_t key_blocks = tiles(p.lk, kBackwardKeys);
  const int key_block = static_cast<int>(blockIdx.x % key_blocks);
  const int64_t bh = blockIdx.x / key_blocks, b = bh / p.heads, h = bh % p.heads;
  const int64_t j0 = static_cast<int64_t>(key_block) * kBackwardKeys;
  const int d = static_cast<int>(p.d);
  const T* q = slab<T>(p.q, p.q_strides, b, h);
  const T* grad = slab<T>(p.grad, p.grad_strides, b, h);
  const float* lse2 = p.lse_log2 + bh * p.lq_padded;
  const float* di = static_cast<const float*>(p.di) + bh * p.lq_padded;
  const float* mask = mask_slab(p, b, h);
  float* dscores = static_cast<float*>(p.dscores);
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;

  const auto load_row_tile = [&](int tile, int stage) {
    const int64_t i0 = static_cast<int64_t>(tile) * kBackwardRows;
    async_tile<T, kD, kBackwardRows, kBackwardThreads>(sq + stage * kStage, q, p.q_strides.l, i0, p.lq, d);
    async_tile<T, kD, kBackwardRows, kBackwardThreads>(sg + stage * kStage, grad, p.grad_strides.l, i0, p.lq, d);
    constexpr int kChunks = kBackwardRows / 4;
    if (threadIdx.x < kChunks)
      cp_async_16(slse + stage * kBackwardRows + threadIdx.x * 4, lse2 + i0 + threadIdx.x * 4, 16);
    else if (threadIdx.x < 2 * kChunks)
      cp_async_16(sdi + stage * kBackwardRows + (threadIdx.x - kChunks) * 4, di + i0 + (threadIdx.x - kChunks) * 4, 16);
  };
  async_tile<T, kD, kBackwardKeys, kBackwardThreads>(sk, slab<T>(p.k, p.k_strides, b, h), p.k_strides.l, j0, p.lk, d);
  async_tile<T, kD, kBackwardKeys, kBackwardThreads>(sv, slab<T>(p.v, p.v_strides, b, h), p.v_strides.l, j0, p.lk, d);
  const int row_tiles = static_cast<int>(tiles(p.lq, kBackwardRows));
  // Each key block starts its walk over the query tiles at a different tile, so that the blocks of one head,
  // running together, add into different dq rows.
  const int first_tile = row_tiles > 0 ? key_block % row_tiles : 0;
  if (row_tiles > 0) load_row_tile(first_tile, 0);
  cp_async_commit();

  const int warp_key0 = warp * 16;
  const bool active = j0 + warp_key0 < p.lk;  // a warp past the last key only writes zeros for dS
  const int64_t keys[2] = {j0 + warp_key0 + g, j0 + warp_key0 + g + 8};
  const bool key_inside[2] = {keys[0] < p.lk, keys[1] < p.lk};
  float dk[1][kN][4] = {}, dv[1][kN][4] = {};
  const int dq_row0 = (warp & 3) * 16;
  const int dq_tile0 = warp < 4 ? 0 : kFirstTiles, dq_tiles = warp < 4 ? kFirstTiles : kN - kFirstTiles;
  // dQ of one query tile from these keys, from its dS^T in shared memory: warp -> 16 query rows x half of the
  // head's n-tiles, added into dq_accum.
  const auto dq_product = [&](const T* scores, int64_t i0) {
    float acc[kFirstTiles + 1][4] = {};  // one spare: the pair branch names acc[i + 1] for every even i
    const int key_steps = static_cast<int>((p.lk - j0 < kBackwardKeys ? p.lk - j0 : kBackwardKeys) + 15) / 16;
#pragma unroll
    for (int kk = 0; kk < kBackwardKeys / 16; ++kk) {
      if (kk >= key_steps) break;
      uint32_t a[4];
      load_a_km(a, scores, kScoresPitch, dq_row0, kk * 16);
#pragma unroll
      for (int i = 0; i < kFirstTiles; i += 2) {
        if (i + 1 < dq_tiles) {
          uint32_t bf[4];
          load_b_kn(bf, sk, kP, kk * 16, (dq_tile0 + i) * 8);
          mma<T>(acc[i], a, bf[0], bf[1]);
          mma<T>(acc[i + 1], a, bf[2], bf[3]);
        } else if (i < dq_tiles) {
          uint32_t bf[2];
          load_b1_kn(bf, sk, kP, kk * 16, (dq_tile0 + i) * 8);
          mma<T>(acc[i], a, bf[0], bf[1]);
        }
      }
    }
    float* dq = p.dq_accum + bh * p.lq * d;
#pragma unroll
    for (int i = 0; i < kFirstTiles; ++i) {
      const int col = (dq_tile0 + i) * 8 + 2 * t;
      if (i >= dq_tiles || col >= d) continue;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t row = i0 + dq_row0 + g + 8 * r;
        if (row >= p.lq) continue;
        float* at = dq + row * d + col;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        atomicAdd(reinterpret_cast<float2*>(at), make_float2(acc[i][2 * r], acc[i][2 * r + 1]));
#else
        atomicAdd(at, acc[i][2 * r]);
        atomicAdd(at + 1, acc[i][2 * r + 1]);
#endif
      }
    }
  };
  // Software-pipelined: step s computes dQ of step s - 1 (its dS^T complete after this step's barrier) beside the
  // scores of its own tile, one barrier per step.
  int64_t previous_i0 = 0;
  for (int step = 0; step < row_tiles; ++step) {
    const int stage = step & 1;
    const int tile = (first_tile + step) % row_tiles;
    const int64_t i0 = static_cast<int64_t>(tile) * kBackwardRows;
    cp_async_wait<0>();
    __syncthreads();  // this tile landed for every thread; every warp is done with the other stages
    if (step + 1 < row_tiles) load_row_tile((tile + 1) % row_tiles, stage ^ 1);
    cp_async_commit();
    if (step > 0) dq_product(sds + (stage ^ 1) * kScoresStage, previous_i0);
    previous_i0 = i0;
    T* const tile_scores = sds + stage * kScoresStage;
    if (active) {
      float st[1][kBackwardRowTiles][4] = {}, dpt[1][kBackwardRowTiles][4] = {};
      warp_gemm_nt<T, kD, 1, kBackwardRowTiles>(st, sk, warp_key0, sq + stage * kStage);
      warp_gemm_nt<T, kD, 1, kBackwardRowTiles>(dpt, sv, warp_key0, sg + stage * kStage);
      const float* tile_lse = slse + stage * kBackwardRows;
      const float* tile_di = sdi + stage * kBackwardRows;
#pragma unroll
      for (int nt = 0; nt < kBackwardRowTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int local = nt * 8 + 2 * t + (e & 1), r = e >> 1;
          const int64_t row = i0 + local;
          float x = st[0][nt][e] * scale_log2;
          if constexpr (kMasked)
            if (mask != nullptr && row < p.lq && key_inside[r])
              x += mask[row * p.mask_strides[2] + keys[r] * p.mask_strides[3]] * kLog2e;
          const float prob = key_inside[r] ? fast_exp2(x - tile_lse[local]) : 0.f;
          const float ds = prob * (dpt[0][nt][e] - tile_di[local]);
          st[0][nt][e] = prob;
          dpt[0][nt][e] = ds;
          if constexpr (kMasked)
            if (dscores != nullptr && row < p.lq && key_inside[r]) dscores[(bh * p.lq + row) * p.lk + keys[r]] = ds;
        }
#pragma unroll
      for (int nt = 0; nt < kBackwardRowTiles; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          *reinterpret_cast<uint32_t*>(tile_scores + (warp_key0 + g + 8 * r) * kScoresPitch + nt * 8 + 2 * t) =
              pack2<T>(dpt[0][nt][2 * r], dpt[0][nt][2 * r + 1]);
#pragma unroll
      for (int kk = 0; kk < kBackwardRows / 16; ++kk) {
        uint32_t pa[1][4], sa[1][4];
        accumulators_to_a<T>(pa[0], st[0][2 * kk], st[0][2 * kk + 1]);
        warp_gemm_nn_step<T, kD, 1>(dv, pa, sg + stage * kStage, kk * 16);
        accumulators_to_a<T>(sa[0], dpt[0][2 * kk], dpt[0][2 * kk + 1]);
        warp_gemm_nn_step<T, kD, 1>(dk, sa, sq + stage * kStage, kk * 16);
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < kBackwardRowTiles; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          *reinterpret_cast<uint32_t*>(tile_scores + (warp_key0 + g + 8 * r) * kScoresPitch + nt * 8 + 2 * t) = 0u;
    }
  }
  if (row_tiles > 0) {
    __syncthreads();  // dS^T of the last tile from every warp
    dq_product(sds + ((row_tiles - 1) & 1) * kScoresStage, previous_i0);
  }
  cp_async_wait<0>();
  if (!active) return;
  const float scale[2] = {static_cast<float>(p.scale), static_cast<float>(p.scale)};
  const float one[2] = {1.f, 1.f};
  store_rows<T, kD>(static_cast<T*>(p.dk) + bh * p.lk * d, d, dk[0], keys, p.lk, scale);
  store_rows<T, kD>(static_cast<T*>(p.dv) + bh * p.lk * d, d, dv[0], keys, p.lk, one);
}

// dq = scale * dq_accum in T, 4 elements per thread (the element count is a multiple of 8).
template <typename T>
__global__ void attention_backward_dq_kernel(AttentionParams p, int64_t n) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i >= n) return;
  const float4 v = *reinterpret_cast<const float4*>(p.dq_accum + i);
  const float s = static_cast<float>(p.scale);
  uint2 packed;
  packed.x = pack2<T>(v.x * s, v.y * s);
  packed.y = pack2<T>(v.z * s, v.w * s);
  *reinterpret_cast<uint2*>(static_cast<T*>(p.dq) + i) = packed;
}

}  // namespace

int64_t mma_backward_padded_rows(int64_t lq) { return static_cast<int64_t>(tiles(lq, kBackwardRows)) * kBackwardRows; }

void mma_attention_backward(const AttentionParams& p, DType dtype, StreamHandle stream) {
  const int64_t bh = p.batch * p.heads;
  if (bh == 0) return;
  const int64_t dq_elements = bh * p.lq * p.d;
  if (dq_elements > 0)
    DCAE_CUDA_CHECK(cudaMemsetAsync(p.dq_accum, 0, static_cast<size_t>(dq_elements) * sizeof(float), stream));
  visit_mma(dtype, p.d, [&]<typename T, int kD>() {
    const int64_t rows = bh * p.lq_padded;
    if (rows > 0) {
      const unsigned blocks = grid_blocks((rows * 8 + 255) / 256, "attention_backward_rows_kernel");
      attention_backward_rows_kernel<T><<<blocks, 256, 0, stream>>>(p);
      check_launch("attention_backward_rows_kernel");
    }
    const bool masked = p.mask != nullptr || p.dscores != nullptr;
    const auto kernel =
        masked ? attention_backward_mma_kernel<T, kD, true> : attention_backward_mma_kernel<T, kD, false>;
    const unsigned key_blocks = grid_blocks(bh * tiles(p.lk, kBackwardKeys), "attention_backward_mma_kernel");
    launch<kBackwardThreads>(kernel, "attention_backward_mma_kernel", dim3(key_blocks), backward_shared_bytes<kD>(),
                             stream, p);
    if (dq_elements > 0) {
      const unsigned blocks = grid_blocks((dq_elements / 4 + 255) / 256, "attention_backward_dq_kernel");
      attention_backward_dq_kernel<T><<<blocks, 256, 0, stream>>>(p, dq_elements);
      check_launch("attention_backward_dq_kernel");
    }
  });
}

}  // namespace dcae::ops::cuda::attention_detail
