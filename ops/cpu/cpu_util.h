// Shared plumbing for CPU kernels: compute dtype (bf16/f16 compute in f32), float visitation, threading.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// The dtype a CPU kernel computes in: f64 stays f64, everything else floating computes in f32.
inline DType compute_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

// A contiguous copy of `t` in its compute dtype (no copy when it already is one).
inline Tensor compute_input(const Tensor& t) { return t.to(compute_dtype(t.dtype())).contiguous(); }

// Calls fn.template operator()<T>() with T = float or double; other dtypes are an error naming `op`.
template <typename Fn>
decltype(auto) visit_float(DType dtype, const char* op, Fn&& fn) {
  if (dtype == DType::f32) return fn.template operator()<float>();
  DCAE_CHECK(dtype == DType::f64, op, " computes in f32 or f64, got ", dtype);
  return fn.template operator()<double>();
}

// Splits [0, n) across OpenMP threads in chunks of at least `grain`; runs inline for small n.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  const int64_t max_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t chunks = std::min<int64_t>(max_threads, (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel for num_threads(chunks) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    fn(begin, end);
  }
}

}  // namespace dcae::ops::cpu
