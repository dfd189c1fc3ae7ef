// ReLU linear attention, quadratic form (see linear_attention_quadratic.h), with tokens as rows:
//   A = K Q^T (A[m, n] = k_m . q_n), den = column sums of A + eps, out = (A^T V) / den.
// Backward as the CPU kernel: dnum = G / den, dden = -sum(G out) / den, dA = V dnum^T + dden (per column),
// dv = A dnum, dk = dA Q, dq = dA^T K, with ReLU gating dq and dk.
#include "ops/cuda/linear_attention_common.cuh"
#include "ops/cuda/linear_attention_quadratic.h"

namespace dcae::ops::cuda::linear_detail {

namespace {

// Shared layout (in compute elements) for n tokens: five [n][d+1] tiles, two [n][n+1] matrices, two [n] vectors.
struct QuadraticLayout {
  int q, k, v, g, out, a, da, inv, dden, total;
  __host__ __device__ QuadraticLayout(int n, int d) {
    const int tile = n * (d + 1), square = n * (n + 1);
    q = 0;
    k = q + tile;
    v = k + tile;
    g = v + tile;    // G, then dnum
    out = g + tile;  // A^T V, then the gradient being written
    a = out + tile;
    da = a + square;
    inv = da + square;  // 1 / den
    dden = inv + n;
    total = dden + n;
  }
};

template <typename T, typename A>
__device__ void store_part(T* dst, const QkvLayout& s, int offset, const A* src, int pitch, const A* gate, int n,
                           int d) {
  for (int e = threadIdx.x; e < n * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const A value = gate == nullptr || gate[r * pitch + c] > A(0) ? src[r * pitch + c] : A(0);
    dst[r * 3 * s.channels + offset + c] = from_compute<T>(static_cast<ComputeT<T>>(value));
  }
}

// A and 1/den for one head, then out = (A^T V) / den into sh[at.out].
template <typename A>
__device__ void quadratic_core(A* sh, const QuadraticLayout& at, int n, int d, A eps) {
  const int pitch = d + 1, apitch = n + 1;
  block_product(sh + at.a, apitch, sh + at.k, pitch, 1, sh + at.q, 1, pitch, n, n, d, false);
  __syncthreads();
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    A total = 0;
    for (int m = 0; m < n; ++m) total += sh[at.a + m * apitch + j];
    sh[at.inv + j] = A(1) / (total + eps);
  }
  block_product(sh + at.out, pitch, sh + at.a, 1, apitch, sh + at.v, pitch, 1, n, d, n, false);
  __syncthreads();
  for (int e = threadIdx.x; e < n * d; e += blockDim.x) sh[at.out + (e / d) * pitch + e % d] *= sh[at.inv + e / d];
  __syncthreads();
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) quadratic_forward_kernel(const T* qkv, QkvLayout s, A eps, T* out) {
  const int n = static_cast<int>(s.tokens), d = static_cast<int>(s.head_dim), pitch = d + 1;
  A* sh = shared_buffer<A>();
  const QuadraticLayout at(n, d);
  const int64_t ih = blockIdx.x, image = ih / s.heads, h = ih % s.heads;
  const T* head = qkv + s.in_offset(image, h);
  load_part(sh + at.q, pitch, head, s, Part::q, 0, n);
  load_part(sh + at.k, pitch, head, s, Part::k, 0, n);
  load_part(sh + at.v, pitch, head, s, Part::v, 0, n);
  __syncthreads();
  quadratic_core(sh, at, n, d, eps);
  T* dst = out + s.out_offset(image, h);
  for (int e = threadIdx.x; e < n * d; e += blockDim.x)
    dst[(e / d) * s.channels + e % d] = from_compute<T>(static_cast<ComputeT<T>>(sh[at.out + (e / d) * pitch + e % d]));
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) quadratic_backward_kernel(const T* grad, const T* qkv, QkvLayout s, A eps,
                                                                      T* dqkv) {
  const int n = static_cast<int>(s.tokens), d = static_cast<int>(s.head_dim), pitch = d + 1, apitch = n + 1;
  A* sh = shared_buffer<A>();
  const QuadraticLayout at(n, d);
  const int64_t ih = blockIdx.x, image = ih / s.heads, h = ih % s.heads;
  const T* head = qkv + s.in_offset(image, h);
  load_part(sh + at.q, pitch, head, s, Part::q, 0, n);
  load_part(sh + at.k, pitch, head, s, Part::k, 0, n);
  load_part(sh + at.v, pitch, head, s, Part::v, 0, n);
  load_output_rows(sh + at.g, pitch, grad + s.out_offset(image, h), s, 0, n);
  __syncthreads();
  quadratic_core(sh, at, n, d, eps);
  for (int j = threadIdx.x; j < n; j += blockDim.x) {  // a thread per token: dden, then G becomes dnum
    A* g = sh + at.g + j * pitch;
    const A* y = sh + at.out + j * pitch;
    const A inv = sh[at.inv + j];
    A dot = 0;
    for (int c = 0; c < d; ++c) dot += g[c] * y[c];
    sh[at.dden + j] = -inv * dot;
    for (int c = 0; c < d; ++c) g[c] *= inv;
  }
  __syncthreads();
  block_product(sh + at.da, apitch, sh + at.v, pitch, 1, sh + at.g, 1, pitch, n, n, d, false);
  __syncthreads();
  for (int e = threadIdx.x; e < n * n; e += blockDim.x) sh[at.da + (e / n) * apitch + e % n] += sh[at.dden + e % n];
  __syncthreads();
  T* dst = dqkv + s.in_offset(image, h);
  block_product(sh + at.out, pitch, sh + at.a, apitch, 1, sh + at.g, pitch, 1, n, d, n, false);  // dv = A dnum
  __syncthreads();
  store_part<T, A>(dst, s, 2 * d, sh + at.out, pitch, nullptr, n, d);
  __syncthreads();
  block_product(sh + at.out, pitch, sh + at.da, apitch, 1, sh + at.q, pitch, 1, n, d, n, false);  // dk = dA Q
  __syncthreads();
  store_part<T, A>(dst, s, d, sh + at.out, pitch, sh + at.k, n, d);
  __syncthreads();
  block_product(sh + at.out, pitch, sh + at.da, 1, apitch, sh + at.k, pitch, 1, n, d, n, false);  // dq = dA^T K
  __syncthreads();
  store_part<T, A>(dst, s, 0, sh + at.out, pitch, sh + at.q, n, d);
}

size_t shared_bytes(DType dtype, int64_t tokens, int64_t head_dim) {
  const size_t element = dtype == DType::f64 ? sizeof(double) : sizeof(float);
  return static_cast<size_t>(QuadraticLayout(static_cast<int>(tokens), static_cast<int>(head_dim)).total) * element;
}

template <typename Kernel>
void prepare(Kernel kernel, size_t bytes) {
  DCAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

}  // namespace

bool quadratic_attention_fits(DType dtype, int64_t tokens, int64_t head_dim) {
  if (tokens > 4096 || head_dim > 4096) return false;
  int device = 0, limit = 0;
  DCAE_CUDA_CHECK(cudaGetDevice(&device));
  DCAE_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return shared_bytes(dtype, tokens, head_dim) <= static_cast<size_t>(limit);
}

void quadratic_attention_forward(const Tensor& qkv, const Tensor& out, const QkvLayout& s, double eps,
                                 StreamHandle stream) {
  const size_t bytes = shared_bytes(qkv.dtype(), s.tokens, s.head_dim);
  visit_device_float(qkv.dtype(), "relu_linear_attention", [&]<typename T>() {
    using A = ComputeT<T>;
    prepare(quadratic_forward_kernel<T, A>, bytes);
    quadratic_forward_kernel<T, A><<<static_cast<unsigned>(s.images * s.heads), kThreads, bytes, stream>>>(
        static_cast<const T*>(qkv.raw_data()), s, static_cast<A>(eps), static_cast<T*>(out.raw_data()));
  });
  check_launch("quadratic_forward_kernel");
}

void quadratic_attention_backward(const Tensor& grad, const Tensor& qkv, const Tensor& dqkv, const QkvLayout& s,
                                  double eps, StreamHandle stream) {
  const size_t bytes = shared_bytes(qkv.dtype(), s.tokens, s.head_dim);
  visit_device_float(qkv.dtype(), "relu_linear_attention backward", [&]<typename T>() {
    using A = ComputeT<T>;
    prepare(quadratic_backward_kernel<T, A>, bytes);
    quadratic_backward_kernel<T, A><<<static_cast<unsigned>(s.images * s.heads), kThreads, bytes, stream>>>(
        static_cast<const T*>(grad.raw_data()), static_cast<const T*>(qkv.raw_data()), s, static_cast<A>(eps),
        static_cast<T*>(dqkv.raw_data()));
  });
  check_launch("quadratic_backward_kernel");
}

}  // namespace dcae::ops::cuda::linear_detail
