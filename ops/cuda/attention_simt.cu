// Scaled dot-product attention on CUDA cores, for every float dtype and head size (the reference GPU path; bf16/f16
// at common head sizes take attention_mma.cu). Tiles of Br query rows and Bc keys live in shared memory in the
// compute dtype, rows padded by one element so column walks do not conflict on banks. Forward runs the online
// softmax (running max and sum per row, the output rescaled as the max grows); the probabilities of the backward are
// recomputed from the saved log-sum-exp.
#include <cuda_runtime.h>

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/attention_common.h"
#include "ops/cuda/math.cuh"

namespace dcae::ops::cuda::attention_detail {

using namespace ::dcae::cuda;

namespace {

constexpr int kThreads = 128;
constexpr int kWarp = 32;
constexpr int kWarps = kThreads / kWarp;

template <typename C>
__device__ __forceinline__ C* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  return reinterpret_cast<C*>(shared_raw);
}

template <typename C>
__device__ __forceinline__ C warp_max(C v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
template <typename C>
__device__ __forceinline__ C warp_sum(C v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One (batch, head) slab of an operand: row `row` starts at base + row * stride.
template <typename T>
struct Slab {
  const T* base;
  int64_t stride;
  __device__ Slab(const void* p, const Strides3& s, int64_t b, int64_t h)
      : base(static_cast<const T*>(p) + b * s.b + h * s.h), stride(s.l) {}
};

// dst[r * pitch + c] = rows [row0, row0 + rows) x cols [0, cols) of the slab in the compute dtype, zeros past `limit`.
template <typename T, typename C>
__device__ void load_rows(C* dst, int pitch, const Slab<T>& src, int64_t row0, int rows, int64_t limit, int cols) {
  for (int e = threadIdx.x; e < rows * cols; e += blockDim.x) {
    const int r = e / cols, c = e % cols;
    dst[r * pitch + c] = row0 + r < limit ? to_compute(src.base[(row0 + r) * src.stride + c]) : C(0);
  }
}

template <typename C>
__device__ __forceinline__ C dot(const C* a, const C* b, int n) {
  C acc = 0;
  for (int c = 0; c < n; ++c) acc += a[c] * b[c];
  return acc;
}

// The mask slab of (b, h), or null.
template <typename C>
__device__ __forceinline__ const C* mask_slab(const AttentionParams& p, int64_t b, int64_t h) {
  return p.mask == nullptr ? nullptr : static_cast<const C*>(p.mask) + b * p.mask_strides[0] + h * p.mask_strides[1];
}

// Shared-memory layout of the forward kernel (offsets in compute elements).
struct ForwardLayout {
  int br, bc, q, k, v, s, o, m, l, alpha, total;
  __host__ __device__ ForwardLayout(int br_, int bc_, int d, int dv) : br(br_), bc(bc_) {
    q = 0;                      // [br][d]
    k = q + br * d;             // [bc][d + 1]
    v = k + bc * (d + 1);       // [bc][dv]
    s = v + bc * dv;            // [br][bc + 1]: scores, then probabilities
    o = s + br * (bc + 1);      // [br][dv]: unnormalized output
    m = o + br * dv;            // [br]: running max
    l = m + br;                 // [br]: running sum
    alpha = l + br;             // [br]: this tile's rescale factor
    total = alpha + br;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) attention_forward_simt_kernel(AttentionParams p, int br, int bc) {
  using C = ComputeT<T>;
  C* sh = dynamic_shared<C>();
  const int d = static_cast<int>(p.d), dv = static_cast<int>(p.dv_dim);
  const ForwardLayout at(br, bc, d, dv);
  C *sq = sh + at.q, *sk = sh + at.k, *sv = sh + at.v, *ss = sh + at.s, *so = sh + at.o;
  C *sm = sh + at.m, *sl = sh + at.l, *salpha = sh + at.alpha;
  const int64_t bh = blockIdx.x, b = bh / p.heads, h = bh % p.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * br;
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const Slab<T> q(p.q, p.q_strides, b, h), k(p.k, p.k_strides, b, h), v(p.v, p.v_strides, b, h);
  const C* mask = mask_slab<C>(p, b, h);
  const C scale = static_cast<C>(p.scale);

  load_rows(sq, d, q, i0, br, p.lq, d);
  for (int e = tid; e < br * dv; e += kThreads) so[e] = C(0);
  for (int r = tid; r < br; r += kThreads) {
    sm[r] = C(-INFINITY);
    sl[r] = C(0);
  }
  for (int64_t j0 = 0; j0 < p.lk; j0 += bc) {
    __syncthreads();  // the previous tile is consumed
    load_rows(sk, d + 1, k, j0, bc, p.lk, d);
    load_rows(sv, dv, v, j0, bc, p.lk, dv);
    __syncthreads();
    for (int e = tid; e < br * bc; e += kThreads) {
      const int r = e / bc, j = e % bc;
      const int64_t i = i0 + r, jj = j0 + j;
      C s = C(-INFINITY);
      if (i < p.lq && jj < p.lk) {
        s = scale * dot(sq + r * d, sk + j * (d + 1), d);
        if (mask != nullptr) s += mask[i * p.mask_strides[2] + jj * p.mask_strides[3]];
      }
      ss[r * (bc + 1) + j] = s;
    }
    __syncthreads();
    for (int r = warp; r < br; r += kWarps) {  // online softmax, a warp per row
      C* row = ss + r * (bc + 1);
      C mx = C(-INFINITY);
      for (int j = lane; j < bc; j += kWarp) mx = fmax(mx, row[j]);
      const C m_new = fmax(sm[r], warp_max(mx));
      const C m_use = m_new == C(-INFINITY) ? C(0) : m_new;  // a fully masked row so far keeps zeros, not NaN
      C sum = 0;
      for (int j = lane; j < bc; j += kWarp) {
        const C e = math::exp(row[j] - m_use);
        row[j] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const C alpha = math::exp(sm[r] - m_use);
        salpha[r] = alpha;
        sl[r] = sl[r] * alpha + sum;
        sm[r] = m_new;
      }
    }
    __syncthreads();
    for (int e = tid; e < br * dv; e += kThreads) {
      const int r = e / dv, c = e % dv;
      const C* prob = ss + r * (bc + 1);
      C acc = so[e] * salpha[r];
      for (int j = 0; j < bc; ++j) acc += prob[j] * sv[j * dv + c];
      so[e] = acc;
    }
  }
  __syncthreads();
  T* out = static_cast<T*>(p.out) + bh * p.lq * dv;
  for (int e = tid; e < br * dv; e += kThreads) {
    const int r = e / dv, c = e % dv;
    const int64_t i = i0 + r;
    if (i < p.lq) out[i * dv + c] = from_compute<T>(sl[r] > C(0) ? so[e] / sl[r] : C(0));
  }
  C* lse = static_cast<C*>(p.lse) + bh * p.lq;
  for (int r = tid; r < br; r += kThreads)
    if (i0 + r < p.lq) lse[i0 + r] = sm[r] == C(-INFINITY) ? C(-INFINITY) : sm[r] + math::log(sl[r]);
}

// Shared-memory layout of both backward kernels: a block of br query rows and bc keys at a time.
struct BackwardLayout {
  int q, g, k, v, p, ds, acc_a, acc_b, lse, di, total;
  // acc_a/acc_b: the kernel's accumulators ([br][d] for dq; [bc][d] and [bc][dv] for dk and dv).
  __host__ __device__ BackwardLayout(int br, int bc, int d, int dv) {
    q = 0;                       // [br][d + 1]
    g = q + br * (d + 1);        // [br][dv + 1]: dO
    k = g + br * (dv + 1);       // [bc][d + 1]
    v = k + bc * (d + 1);        // [bc][dv + 1]
    p = v + bc * (dv + 1);       // [br][bc + 1]: probabilities
    ds = p + br * (bc + 1);      // [br][bc + 1]: dP, then dS
    acc_a = ds + br * (bc + 1);  // [max(br, bc)][d]
    acc_b = acc_a + (br > bc ? br : bc) * d;  // [bc][dv]
    lse = acc_b + bc * dv;       // [br]
    di = lse + br;               // [br]
    total = di + br;
  }
};

// P and dP (into sp/sds) for the br x bc block at query rows i0 and keys j0: P = exp(scale q.k + mask - lse), zero
// for fully masked rows and for rows/keys past the ends.
template <typename C>
__device__ void probabilities_and_dp(const AttentionParams& p, const C* mask, const BackwardLayout& at, C* sh, int br,
                                     int bc, int64_t i0, int64_t j0) {
  const int d = static_cast<int>(p.d), dv = static_cast<int>(p.dv_dim);
  const C scale = static_cast<C>(p.scale);
  for (int e = threadIdx.x; e < br * bc; e += kThreads) {
    const int r = e / bc, j = e % bc;
    const int64_t i = i0 + r, jj = j0 + j;
    const C lse = sh[at.lse + r];
    C prob = 0, dprob = 0;
    if (i < p.lq && jj < p.lk && lse != C(-INFINITY)) {
      C s = scale * dot(sh + at.q + r * (d + 1), sh + at.k + j * (d + 1), d);
      if (mask != nullptr) s += mask[i * p.mask_strides[2] + jj * p.mask_strides[3]];
      prob = math::exp(s - lse);
      dprob = dot(sh + at.g + r * (dv + 1), sh + at.v + j * (dv + 1), dv);
    }
    sh[at.p + r * (bc + 1) + j] = prob;
    sh[at.ds + r * (bc + 1) + j] = dprob;
  }
}

// Per query tile: D_i = sum_j P_ij dP_ij (pass 1), then dS = P (dP - D) and dq = scale dS k (pass 2); dscores and
// D (for the key-tile kernel) go to global memory.
template <typename T>
__global__ void __launch_bounds__(kThreads) attention_backward_rows_simt_kernel(AttentionParams p, int br, int bc) {
  using C = ComputeT<T>;
  C* sh = dynamic_shared<C>();
  const int d = static_cast<int>(p.d), dv = static_cast<int>(p.dv_dim);
  const BackwardLayout at(br, bc, d, dv);
  const int64_t bh = blockIdx.x, b = bh / p.heads, h = bh % p.heads;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * br;
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const Slab<T> q(p.q, p.q_strides, b, h), k(p.k, p.k_strides, b, h), v(p.v, p.v_strides, b, h);
  const Slab<T> g(p.grad, p.grad_strides, b, h);
  const C* mask = mask_slab<C>(p, b, h);
  const C* lse = static_cast<const C*>(p.lse) + bh * p.lq;

  load_rows(sh + at.q, d + 1, q, i0, br, p.lq, d);
  load_rows(sh + at.g, dv + 1, g, i0, br, p.lq, dv);
  for (int e = tid; e < br * d; e += kThreads) sh[at.acc_a + e] = C(0);
  for (int r = tid; r < br; r += kThreads) {
    sh[at.lse + r] = i0 + r < p.lq ? lse[i0 + r] : C(-INFINITY);
    sh[at.di + r] = C(0);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t j0 = 0; j0 < p.lk; j0 += bc) {
      __syncthreads();
      load_rows(sh + at.k, d + 1, k, j0, bc, p.lk, d);
      load_rows(sh + at.v, dv + 1, v, j0, bc, p.lk, dv);
      __syncthreads();
      probabilities_and_dp(p, mask, at, sh, br, bc, i0, j0);
      __syncthreads();
      if (pass == 0) {
        for (int r = warp; r < br; r += kWarps) {
          C acc = 0;
          for (int j = lane; j < bc; j += kWarp) acc += sh[at.p + r * (bc + 1) + j] * sh[at.ds + r * (bc + 1) + j];
          acc = warp_sum(acc);
          if (lane == 0) sh[at.di + r] += acc;
        }
        continue;
      }
      C* dscores = static_cast<C*>(p.dscores);
      for (int e = tid; e < br * bc; e += kThreads) {
        const int r = e / bc, j = e % bc;
        C& slot = sh[at.ds + r * (bc + 1) + j];
        slot = sh[at.p + r * (bc + 1) + j] * (slot - sh[at.di + r]);
        const int64_t i = i0 + r, jj = j0 + j;
        if (dscores != nullptr && i < p.lq && jj < p.lk) dscores[(bh * p.lq + i) * p.lk + jj] = slot;
      }
      __syncthreads();
      for (int e = tid; e < br * d; e += kThreads) {
        const int r = e / d, c = e % d;
        C acc = 0;
        for (int j = 0; j < bc; ++j) acc += sh[at.ds + r * (bc + 1) + j] * sh[at.k + j * (d + 1) + c];
        sh[at.acc_a + e] += acc;
      }
    }
  }
  __syncthreads();
  T* dq = static_cast<T*>(p.dq) + bh * p.lq * d;
  const C scale = static_cast<C>(p.scale);
  for (int e = tid; e < br * d; e += kThreads) {
    const int r = e / d, c = e % d;
    if (i0 + r < p.lq) dq[(i0 + r) * d + c] = from_compute<T>(scale * sh[at.acc_a + e]);
  }
  C* di = static_cast<C*>(p.di) + bh * p.lq;
  for (int r = tid; r < br; r += kThreads)
    if (i0 + r < p.lq) di[i0 + r] = sh[at.di + r];
}

// Per key tile: walks every query tile; dv += P^T dO and dk += scale dS^T q with D from the rows kernel.
template <typename T>
__global__ void __launch_bounds__(kThreads) attention_backward_cols_simt_kernel(AttentionParams p, int br, int bc) {
  using C = ComputeT<T>;
  C* sh = dynamic_shared<C>();
  const int d = static_cast<int>(p.d), dv = static_cast<int>(p.dv_dim);
  const BackwardLayout at(br, bc, d, dv);
  const int64_t bh = blockIdx.x, b = bh / p.heads, h = bh % p.heads;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * bc;
  const int tid = threadIdx.x;
  const Slab<T> q(p.q, p.q_strides, b, h), k(p.k, p.k_strides, b, h), v(p.v, p.v_strides, b, h);
  const Slab<T> g(p.grad, p.grad_strides, b, h);
  const C* mask = mask_slab<C>(p, b, h);
  const C* lse = static_cast<const C*>(p.lse) + bh * p.lq;
  const C* di = static_cast<const C*>(p.di) + bh * p.lq;

  load_rows(sh + at.k, d + 1, k, j0, bc, p.lk, d);
  load_rows(sh + at.v, dv + 1, v, j0, bc, p.lk, dv);
  for (int e = tid; e < bc * d; e += kThreads) sh[at.acc_a + e] = C(0);
  for (int e = tid; e < bc * dv; e += kThreads) sh[at.acc_b + e] = C(0);
  for (int64_t i0 = 0; i0 < p.lq; i0 += br) {
    __syncthreads();
    load_rows(sh + at.q, d + 1, q, i0, br, p.lq, d);
    load_rows(sh + at.g, dv + 1, g, i0, br, p.lq, dv);
    for (int r = tid; r < br; r += kThreads) {
      sh[at.lse + r] = i0 + r < p.lq ? lse[i0 + r] : C(-INFINITY);
      sh[at.di + r] = i0 + r < p.lq ? di[i0 + r] : C(0);
    }
    __syncthreads();
    probabilities_and_dp(p, mask, at, sh, br, bc, i0, j0);
    __syncthreads();
    for (int e = tid; e < br * bc; e += kThreads) {
      const int r = e / bc, j = e % bc;
      C& slot = sh[at.ds + r * (bc + 1) + j];
      slot = sh[at.p + r * (bc + 1) + j] * (slot - sh[at.di + r]);
    }
    __syncthreads();
    for (int e = tid; e < bc * dv; e += kThreads) {
      const int j = e / dv, c = e % dv;
      C acc = 0;
      for (int r = 0; r < br; ++r) acc += sh[at.p + r * (bc + 1) + j] * sh[at.g + r * (dv + 1) + c];
      sh[at.acc_b + e] += acc;
    }
    for (int e = tid; e < bc * d; e += kThreads) {
      const int j = e / d, c = e % d;
      C acc = 0;
      for (int r = 0; r < br; ++r) acc += sh[at.ds + r * (bc + 1) + j] * sh[at.q + r * (d + 1) + c];
      sh[at.acc_a + e] += acc;
    }
  }
  __syncthreads();
  const C scale = static_cast<C>(p.scale);
  T* dk = static_cast<T*>(p.dk) + bh * p.lk * d;
  T* dvp = static_cast<T*>(p.dv) + bh * p.lk * dv;
  for (int e = tid; e < bc * d; e += kThreads)
    if (j0 + e / d < p.lk) dk[(j0 + e / d) * d + e % d] = from_compute<T>(scale * sh[at.acc_a + e]);
  for (int e = tid; e < bc * dv; e += kThreads)
    if (j0 + e / dv < p.lk) dvp[(j0 + e / dv) * dv + e % dv] = from_compute<T>(sh[at.acc_b + e]);
}

size_t max_shared_bytes() {
  int device = 0, bytes = 0;
  DCAE_CUDA_CHECK(cudaGetDevice(&device));
  DCAE_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(bytes);
}

// The largest square tile (32, 16 or 8) whose shared memory fits; throws naming the head sizes when none does.
template <typename Layout>
int pick_tile(size_t element_bytes, int64_t d, int64_t dv, size_t& bytes) {
  const size_t limit = max_shared_bytes();
  for (int tile : {32, 16, 8}) {
    bytes = static_cast<size_t>(Layout(tile, tile, static_cast<int>(d), static_cast<int>(dv)).total) * element_bytes;
    if (bytes <= limit) return tile;
  }
  DCAE_FAIL("scaled_dot_product_attention on CUDA: head sizes D = ", d, ", Dv = ", dv,
            " need more shared memory than the device has (", limit, " bytes per block)");
}

template <typename Kernel>
void launch(Kernel kernel, const char* name, dim3 grid, size_t bytes, StreamHandle stream, const AttentionParams& p,
            int tile) {
  if (grid.x == 0 || grid.y == 0) return;
  DCAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, kThreads, bytes, stream>>>(p, tile, tile);
  check_launch(name);
}

unsigned tiles(int64_t n, int tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

}  // namespace

void simt_attention_forward(const AttentionParams& p, DType dtype, StreamHandle stream) {
  visit_device_float(dtype, "scaled_dot_product_attention", [&]<typename T>() {
    size_t bytes = 0;
    const int tile = pick_tile<ForwardLayout>(sizeof(ComputeT<T>), p.d, p.dv_dim, bytes);
    const dim3 grid(static_cast<unsigned>(p.batch * p.heads), tiles(p.lq, tile));
    launch(attention_forward_simt_kernel<T>, "attention_forward_simt_kernel", grid, bytes, stream, p, tile);
  });
}

void simt_attention_backward(const AttentionParams& p, DType dtype, StreamHandle stream) {
  visit_device_float(dtype, "scaled_dot_product_attention backward", [&]<typename T>() {
    size_t bytes = 0;
    const int tile = pick_tile<BackwardLayout>(sizeof(ComputeT<T>), p.d, p.dv_dim, bytes);
    const unsigned bh = static_cast<unsigned>(p.batch * p.heads);
    launch(attention_backward_rows_simt_kernel<T>, "attention_backward_rows_simt_kernel", dim3(bh, tiles(p.lq, tile)),
           bytes, stream, p, tile);
    launch(attention_backward_cols_simt_kernel<T>, "attention_backward_cols_simt_kernel", dim3(bh, tiles(p.lk, tile)),
           bytes, stream, p, tile);
  });
}

}  // namespace dcae::ops::cuda::attention_detail
