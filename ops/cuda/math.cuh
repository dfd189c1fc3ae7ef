// Device math in the compute type (float or double) for ops kernels. Calls are qualified with :: because the
// names exp, log, sqrt, ... also name dcae::ops functions, which would hide the C library's in this namespace.
#pragma once
#include <cuda_runtime.h>

#include <type_traits>

namespace dcae::ops::cuda::math {

template <typename C>
__device__ __forceinline__ C exp(C v) {
  if constexpr (std::is_same_v<C, float>) return ::expf(v);
  else return ::exp(v);
}
template <typename C>
__device__ __forceinline__ C log(C v) {
  if constexpr (std::is_same_v<C, float>) return ::logf(v);
  else return ::log(v);
}
template <typename C>
__device__ __forceinline__ C tanh(C v) {
  if constexpr (std::is_same_v<C, float>) return ::tanhf(v);
  else return ::tanh(v);
}
template <typename C>
__device__ __forceinline__ C sin(C v) {
  if constexpr (std::is_same_v<C, float>) return ::sinf(v);
  else return ::sin(v);
}
template <typename C>
__device__ __forceinline__ C cos(C v) {
  if constexpr (std::is_same_v<C, float>) return ::cosf(v);
  else return ::cos(v);
}
template <typename C>
__device__ __forceinline__ C erf(C v) {
  if constexpr (std::is_same_v<C, float>) return ::erff(v);
  else return ::erf(v);
}
template <typename C>
__device__ __forceinline__ C sqrt(C v) {
  if constexpr (std::is_same_v<C, float>) return ::sqrtf(v);
  else return ::sqrt(v);
}
template <typename C>
__device__ __forceinline__ C abs(C v) {
  if constexpr (std::is_same_v<C, float>) return ::fabsf(v);
  else return ::fabs(v);
}
template <typename C>
__device__ __forceinline__ C pow(C v, C p) {
  if constexpr (std::is_same_v<C, float>) return ::powf(v, p);
  else return ::pow(v, p);
}
template <typename C>
__device__ __forceinline__ bool isnan(C v) {
  return v != v;
}

}  // namespace dcae::ops::cuda::math
