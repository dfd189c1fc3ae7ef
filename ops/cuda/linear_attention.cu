// ReLU linear attention, linear form, and the host side of both forms (ops/cuda/attention.h). Per (image, head),
// with tokens as rows and M = K^T [V, 1] (d x (d+1), the transpose of the spec's M):
//   forward:  M by token chunks (partials summed in chunk order), then out = O[:, :d] / (O[:, d] + eps), O = Q M.
//   backward: M again; per token chunk O, dO' = [G / den, -sum(G O[:, :d]) / den^2], dq = dO' M^T and partials of
//             dM = Q^T dO'; then dk = [V, 1] dM^T and dv = K dM[:, :d]. ReLU gates dq and dk.
// All products run on shared-memory tiles in fp32 (f64 for f64), rows padded to d + 1.
#include <algorithm>

#include "ops/cuda/attention.h"
#include "ops/cuda/linear_attention_common.cuh"
#include "ops/cuda/linear_attention_quadratic.h"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;
using namespace linear_detail;

namespace {

// M (or dM) partials of one (image, head, chunk): partial[(ih * chunks + chunk)] = sum over the chunk's tokens of
// ReLU(K)^T [V, 1]. Shared: K tile, [V, 1] tile, the accumulator.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) linear_m_partial_kernel(const T* qkv, QkvLayout s, int tile,
                                                                    int64_t chunks, A* partial) {
  const int d = static_cast<int>(s.head_dim), pitch = d + 1;
  A* sk = shared_buffer<A>();
  A* sv = sk + tile * pitch;
  A* sm = sv + tile * pitch;
  const int64_t ih = blockIdx.x, chunk = blockIdx.y;
  const T* head = qkv + s.in_offset(ih / s.heads, ih % s.heads);
  const int64_t begin = s.tokens * chunk / chunks, end = s.tokens * (chunk + 1) / chunks;
  for (int e = threadIdx.x; e < d * pitch; e += blockDim.x) sm[e] = A(0);
  for (int64_t t0 = begin; t0 < end; t0 += tile) {
    const int rows = static_cast<int>(min(static_cast<int64_t>(tile), end - t0));
    __syncthreads();
    load_part(sk, pitch, head, s, Part::k, t0, rows);
    load_part(sv, pitch, head, s, Part::v, t0, rows, /*ones_column=*/true);
    __syncthreads();
    block_product(sm, pitch, sk, 1, pitch, sv, pitch, 1, d, d + 1, rows, /*accumulate=*/true);
  }
  __syncthreads();
  A* dst = partial + (ih * chunks + chunk) * d * pitch;
  for (int e = threadIdx.x; e < d * pitch; e += blockDim.x) dst[e] = sm[e];
}

// out[i, e] = sum over chunks of partial[i, chunk, e], in chunk order.
template <typename A>
__global__ void sum_partials_kernel(const A* partial, A* out, int64_t count, int64_t chunks, int64_t width) {
  for (int64_t i = global_thread<int64_t>(); i < count * width; i += grid_stride<int64_t>()) {
    const A* p = partial + (i / width) * chunks * width + i % width;
    A total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += p[c * width];
    out[i] = total;
  }
}

// out rows of one token tile: O = ReLU(Q) M, out = O[:, :d] / (O[:, d] + eps).
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) linear_forward_apply_kernel(const T* qkv, QkvLayout s, const A* m, A eps,
                                                                        int tile, T* out) {
  const int d = static_cast<int>(s.head_dim), pitch = d + 1;
  A* sm = shared_buffer<A>();
  A* sq = sm + d * pitch;
  A* so = sq + tile * pitch;
  const int64_t ih = blockIdx.x, t0 = static_cast<int64_t>(blockIdx.y) * tile;
  const int rows = static_cast<int>(min(static_cast<int64_t>(tile), s.tokens - t0));
  const int64_t image = ih / s.heads, h = ih % s.heads;
  for (int e = threadIdx.x; e < d * pitch; e += blockDim.x) sm[e] = m[ih * d * pitch + e];
  load_part(sq, pitch, qkv + s.in_offset(image, h), s, Part::q, t0, rows);
  __syncthreads();
  block_product(so, pitch, sq, pitch, 1, sm, pitch, 1, rows, d + 1, d, false);
  __syncthreads();
  T* dst = out + s.out_offset(image, h);
  for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const A inv_den = A(1) / (so[r * pitch + d] + eps);
    dst[(t0 + r) * s.channels + c] = from_compute<T>(static_cast<ComputeT<T>>(so[r * pitch + c] * inv_den));
  }
}

// Backward, per (image, head, token chunk): dq for the chunk's tokens and the chunk's partial dM = ReLU(Q)^T dO'.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) linear_backward_q_kernel(const T* qkv, const T* grad, QkvLayout s,
                                                                     const A* m, A eps, int tile, int64_t chunks,
                                                                     A* dm_partial, T* dqkv) {
  const int d = static_cast<int>(s.head_dim), pitch = d + 1;
  A* sm = shared_buffer<A>();
  A* sdm = sm + d * pitch;
  A* sq = sdm + d * pitch;
  A* sg = sq + tile * pitch;
  A* so = sg + tile * pitch;   // O, then dO'
  A* sdq = so + tile * pitch;
  const int64_t ih = blockIdx.x, chunk = blockIdx.y;
  const int64_t image = ih / s.heads, h = ih % s.heads;
  const T* head = qkv + s.in_offset(image, h);
  const int64_t begin = s.tokens * chunk / chunks, end = s.tokens * (chunk + 1) / chunks;
  for (int e = threadIdx.x; e < d * pitch; e += blockDim.x) {
    sm[e] = m[ih * d * pitch + e];
    sdm[e] = A(0);
  }
  for (int64_t t0 = begin; t0 < end; t0 += tile) {
    const int rows = static_cast<int>(min(static_cast<int64_t>(tile), end - t0));
    __syncthreads();
    load_part(sq, pitch, head, s, Part::q, t0, rows);
    load_output_rows(sg, pitch, grad + s.out_offset(image, h), s, t0, rows);
    __syncthreads();
    block_product(so, pitch, sq, pitch, 1, sm, pitch, 1, rows, d + 1, d, false);
    __syncthreads();
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      A* o = so + r * pitch;
      const A* g = sg + r * pitch;
      const A inv_den = A(1) / (o[d] + eps);
      A dot = 0;  // sum_c G O[:, c]
      for (int c = 0; c < d; ++c) dot += g[c] * o[c];
      for (int c = 0; c < d; ++c) o[c] = g[c] * inv_den;
      o[d] = -inv_den * inv_den * dot;
    }
    __syncthreads();
    block_product(sdq, pitch, so, pitch, 1, sm, 1, pitch, rows, d, d + 1, false);  // dq = dO' M^T
    block_product(sdm, pitch, sq, 1, pitch, so, pitch, 1, d, d + 1, rows, true);   // dM += Q^T dO'
    __syncthreads();
    T* dst = dqkv + s.in_offset(image, h);
    for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      const A value = sq[r * pitch + c] > A(0) ? sdq[r * pitch + c] : A(0);
      dst[(t0 + r) * 3 * s.channels + c] = from_compute<T>(static_cast<ComputeT<T>>(value));
    }
  }
  __syncthreads();
  A* out = dm_partial + (ih * chunks + chunk) * d * pitch;
  for (int e = threadIdx.x; e < d * pitch; e += blockDim.x) out[e] = sdm[e];
}

// Backward, per token tile: dk = [V, 1] dM^T (gated by ReLU(K) > 0) and dv = ReLU(K) dM[:, :d].
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) linear_backward_kv_kernel(const T* qkv, QkvLayout s, const A* dm, int tile,
                                                                      T* dqkv) {
  const int d = static_cast<int>(s.head_dim), pitch = d + 1;
  A* sdm = shared_buffer<A>();
  A* sk = sdm + d * pitch;
  A* sv = sk + tile * pitch;
  A* sdk = sv + tile * pitch;
  A* sdv = sdk + tile * pitch;
  const int64_t ih = blockIdx.x, t0 = static_cast<int64_t>(blockIdx.y) * tile;
  const int rows = static_cast<int>(min(static_cast<int64_t>(tile), s.tokens - t0));
  const int64_t image = ih / s.heads, h = ih % s.heads;
  const T* head = qkv + s.in_offset(image, h);
  for (int e = threadIdx.x; e < d * pitch; e += blockDim.x) sdm[e] = dm[ih * d * pitch + e];
  load_part(sk, pitch, head, s, Part::k, t0, rows);
  load_part(sv, pitch, head, s, Part::v, t0, rows, /*ones_column=*/true);
  __syncthreads();
  block_product(sdk, pitch, sv, pitch, 1, sdm, 1, pitch, rows, d, d + 1, false);
  block_product(sdv, pitch, sk, pitch, 1, sdm, pitch, 1, rows, d, d, false);
  __syncthreads();
  T* dst = dqkv + s.in_offset(image, h);
  for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const int64_t row = (t0 + r) * 3 * s.channels;
    const A dk = sk[r * pitch + c] > A(0) ? sdk[r * pitch + c] : A(0);
    dst[row + d + c] = from_compute<T>(static_cast<ComputeT<T>>(dk));
    dst[row + 2 * d + c] = from_compute<T>(static_cast<ComputeT<T>>(sdv[r * pitch + c]));
  }
}

size_t max_shared_bytes() {
  int device = 0, bytes = 0;
  DCAE_CUDA_CHECK(cudaGetDevice(&device));
  DCAE_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(bytes);
}

// Shared bytes of each kernel for a token tile, in `square` [d][d+1] matrices plus `tiles` [tile][d+1] tiles.
size_t shared_bytes(int64_t d, int tile, int square, int tiles, size_t element) {
  return static_cast<size_t>((square * d + tiles * tile) * (d + 1)) * element;
}

// The largest token tile (64 down to 8) for which the most demanding kernel (the backward q kernel: 2 square
// matrices, 4 tiles) fits in shared memory.
int pick_tile(int64_t d, size_t element) {
  const size_t limit = max_shared_bytes();
  for (int tile : {64, 32, 16, 8})
    if (shared_bytes(d, tile, 2, 4, element) <= limit) return tile;
  DCAE_FAIL("relu_linear_attention on CUDA: head_dim ", d, " needs more shared memory than the device has (",
            limit, " bytes per block)");
}

// Token chunks per (image, head) for the reductions: enough blocks to fill the device, at least a tile each.
int64_t pick_chunks(const QkvLayout& s, int tile) {
  const int64_t pairs = s.images * s.heads;
  const int64_t target = 4 * multiprocessor_count(current_device());
  const int64_t max_chunks = std::max<int64_t>(1, (s.tokens + tile - 1) / tile);
  return std::clamp<int64_t>((target + pairs - 1) / pairs, 1, max_chunks);
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, const char* name, dim3 grid, size_t bytes, cudaStream_t stream, Args... args) {
  DCAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, kThreads, bytes, stream>>>(args...);
  check_launch(name);
}

// M (or dM) = the chunk partials of `kernel`-style reductions summed in order: [pairs, d, d+1] in A.
template <typename A>
Tensor sum_partials(const Tensor& partial, const QkvLayout& s, int64_t chunks, cudaStream_t stream) {
  const int64_t pairs = s.images * s.heads, width = s.head_dim * (s.head_dim + 1);
  Tensor out = empty({pairs, s.head_dim, s.head_dim + 1}, partial.dtype(), partial.device());
  sum_partials_kernel<A><<<grid_for(pairs * width), kBlockThreads, 0, stream>>>(
      static_cast<const A*>(partial.raw_data()), static_cast<A*>(out.raw_data()), pairs, chunks, width);
  check_launch("sum_partials_kernel");
  return out;
}

QkvLayout layout_of(const Tensor& qkv, int64_t head_dim) {
  return {qkv.size(0), qkv.size(1) * qkv.size(2), qkv.size(3) / 3, head_dim, qkv.size(3) / (3 * head_dim)};
}

// M = ReLU(K)^T [V, 1] per (image, head): [pairs, d, d+1] in A.
template <typename T, typename A>
Tensor head_matrices(const T* qkv, const QkvLayout& s, int tile, const Device& device, DType acc_dtype,
                     cudaStream_t stream) {
  const int64_t pairs = s.images * s.heads, chunks = pick_chunks(s, tile);
  Tensor partial = empty({pairs, chunks, s.head_dim, s.head_dim + 1}, acc_dtype, device);
  launch(linear_m_partial_kernel<T, A>, "linear_m_partial_kernel",
         dim3(static_cast<unsigned>(pairs), static_cast<unsigned>(chunks)),
         shared_bytes(s.head_dim, tile, 1, 2, sizeof(A)), stream, qkv, s, tile, chunks,
         static_cast<A*>(partial.raw_data()));
  return sum_partials<A>(partial, s, chunks, stream);
}

}  // namespace

Tensor relu_linear_attention_forward(const Tensor& qkv_in, int64_t head_dim, double eps, bool quadratic) {
  const Tensor qkv = qkv_in.contiguous();
  const QkvLayout s = layout_of(qkv, head_dim);
  Tensor out = empty({qkv.size(0), qkv.size(1), qkv.size(2), s.channels}, qkv.dtype(), qkv.device());
  if (out.numel() == 0) return out;
  DeviceGuard guard(qkv.device().index);
  const cudaStream_t stream = stream_for(qkv);
  if (quadratic && quadratic_attention_fits(qkv.dtype(), s.tokens, head_dim)) {
    quadratic_attention_forward(qkv, out, s, eps, stream);
    return out;
  }
  // The quadratic form on more tokens than shared memory holds computes the same function the linear way.
  visit_device_float(qkv.dtype(), "relu_linear_attention", [&]<typename T>() {
    using A = ComputeT<T>;
    const DType acc_dtype = std::is_same_v<A, double> ? DType::f64 : DType::f32;
    const int tile = pick_tile(head_dim, sizeof(A));
    const T* pqkv = static_cast<const T*>(qkv.raw_data());
    const Tensor m = head_matrices<T, A>(pqkv, s, tile, qkv.device(), acc_dtype, stream);
    const unsigned tiles = static_cast<unsigned>((s.tokens + tile - 1) / tile);
    launch(linear_forward_apply_kernel<T, A>, "linear_forward_apply_kernel",
           dim3(static_cast<unsigned>(s.images * s.heads), tiles), shared_bytes(head_dim, tile, 1, 2, sizeof(A)),
           stream, pqkv, s, static_cast<const A*>(m.raw_data()), static_cast<A>(eps), tile,
           static_cast<T*>(out.raw_data()));
  });
  return out;
}

Tensor relu_linear_attention_backward(const Tensor& grad_in, const Tensor& qkv_in, int64_t head_dim, double eps,
                                      bool quadratic) {
  const Tensor qkv = qkv_in.contiguous();
  const Tensor grad = grad_in.to(qkv.dtype()).contiguous();
  const QkvLayout s = layout_of(qkv, head_dim);
  Tensor dqkv = empty(qkv.shape(), qkv.dtype(), qkv.device());
  if (dqkv.numel() == 0) return dqkv.to(grad_in.dtype());
  DeviceGuard guard(qkv.device().index);
  const cudaStream_t stream = stream_for(qkv);
  if (quadratic && quadratic_attention_fits(qkv.dtype(), s.tokens, head_dim)) {
    quadratic_attention_backward(grad, qkv, dqkv, s, eps, stream);
    return dqkv.to(grad_in.dtype());
  }
  visit_device_float(qkv.dtype(), "relu_linear_attention backward", [&]<typename T>() {
    using A = ComputeT<T>;
    const DType acc_dtype = std::is_same_v<A, double> ? DType::f64 : DType::f32;
    const int tile = pick_tile(head_dim, sizeof(A));
    const T* pqkv = static_cast<const T*>(qkv.raw_data());
    const int64_t pairs = s.images * s.heads, chunks = pick_chunks(s, tile);
    const Tensor m = head_matrices<T, A>(pqkv, s, tile, qkv.device(), acc_dtype, stream);
    Tensor dm_partial = empty({pairs, chunks, head_dim, head_dim + 1}, acc_dtype, qkv.device());
    launch(linear_backward_q_kernel<T, A>, "linear_backward_q_kernel",
           dim3(static_cast<unsigned>(pairs), static_cast<unsigned>(chunks)),
           shared_bytes(head_dim, tile, 2, 4, sizeof(A)), stream, pqkv, static_cast<const T*>(grad.raw_data()), s,
           static_cast<const A*>(m.raw_data()), static_cast<A>(eps), tile, chunks,
           static_cast<A*>(dm_partial.raw_data()), static_cast<T*>(dqkv.raw_data()));
    const Tensor dm = sum_partials<A>(dm_partial, s, chunks, stream);
    const unsigned tiles = static_cast<unsigned>((s.tokens + tile - 1) / tile);
    launch(linear_backward_kv_kernel<T, A>, "linear_backward_kv_kernel", dim3(static_cast<unsigned>(pairs), tiles),
           shared_bytes(head_dim, tile, 1, 4, sizeof(A)), stream, pqkv, s, static_cast<const A*>(dm.raw_data()),
           tile, static_cast<T*>(dqkv.raw_data()));
  });
  return dqkv.to(grad_in.dtype());
}

}  // namespace dcae::ops::cuda
