// Shared plumbing for CUDA kernels (.cu files only): device element types, value conversion that mirrors the CPU's
// rounding, the compute type (bf16/f16 compute in fp32), 16-byte vectors and launch configuration.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/indexing.h"
#include "core/tensor/cuda/stream.h"
#include "core/tensor/tensor.h"

namespace dcae::cuda {

// dcae's host storage types mapped to CUDA's device types (same size and bits).
template <typename T>
struct DeviceTypeOf {
  using type = T;
};
template <>
struct DeviceTypeOf<bf16> {
  using type = __nv_bfloat16;
};
template <>
struct DeviceTypeOf<f16> {
  using type = __half;
};

// Calls fn.template operator()<T>() with T the device element type of `dtype` (every dtype).
template <typename Fn>
decltype(auto) visit_device_dtype(DType dtype, Fn&& fn) {
  return visit_dtype(dtype, [&]<typename H>() -> decltype(auto) {
    return fn.template operator()<typename DeviceTypeOf<H>::type>();
  });
}

// Same for the float dtypes only (f32, f64, bf16, f16); others are an error naming `op`.
template <typename Fn>
decltype(auto) visit_device_float(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::bf16: return fn.template operator()<__nv_bfloat16>();
    case DType::f16: return fn.template operator()<__half>();
    default: break;
  }
  DCAE_FAIL(op, " on CUDA supports f32, f64, bf16 and f16, got ", dtype);
}

// Unsigned type of the same size, for kernels that only move elements.
template <size_t Bytes>
struct BitsOf;
template <> struct BitsOf<1> { using type = uint8_t; };
template <> struct BitsOf<2> { using type = uint16_t; };
template <> struct BitsOf<4> { using type = uint32_t; };
template <> struct BitsOf<8> { using type = uint64_t; };

// Calls fn.template operator()<U>() with U the unsigned type of `bytes` (1, 2, 4 or 8).
template <typename Fn>
decltype(auto) visit_bits(size_t bytes, Fn&& fn) {
  switch (bytes) {
    case 1: return fn.template operator()<uint8_t>();
    case 2: return fn.template operator()<uint16_t>();
    case 4: return fn.template operator()<uint32_t>();
    default: break;
  }
  DCAE_CHECK(bytes == 8, "no element type is ", bytes, " bytes wide");
  return fn.template operator()<uint64_t>();
}

template <typename T>
constexpr bool kIsReducedFloat = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;
template <typename T>
constexpr bool kIsFloatFamily = std::is_same_v<T, float> || kIsReducedFloat<T>;

// The type a kernel computes T in: float for float, bf16 and f16; double and integers compute as themselves.
template <typename T>
using ComputeT = std::conditional_t<kIsFloatFamily<T>, float, T>;

template <typename T>
__device__ __forceinline__ ComputeT<T> to_compute(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return v;
}

// Rounds a compute value to T (round to nearest even, like the CPU).
template <typename T>
__device__ __forceinline__ T from_compute(ComputeT<T> v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return v;
}

// A double rounded to T exactly as dcae::from_double does: bf16/f16 go through float (two roundings).
template <typename T>
__device__ __forceinline__ T device_from_double(double v) {
  if constexpr (kIsReducedFloat<T>) return from_compute<T>(__double2float_rn(v));
  else if constexpr (std::is_same_v<T, float>) return __double2float_rn(v);
  else if constexpr (std::is_same_v<T, bool>) return v != 0.0;
  else return static_cast<T>(v);
}

template <typename T>
__device__ __forceinline__ double device_to_double(T v) {
  if constexpr (kIsReducedFloat<T>) return static_cast<double>(to_compute(v));
  else return static_cast<double>(v);
}

// One element converted between dtypes with the CPU's rounding (dcae::convert_value).
template <typename D, typename S>
__device__ __forceinline__ D convert(S v) {
  if constexpr (std::is_same_v<D, S>) return v;
  // float <-> bf16/f16 through float is exact where the double route is, and cheaper
  else if constexpr (kIsFloatFamily<D> && kIsFloatFamily<S>) return from_compute<D>(to_compute(v));
  else return device_from_double<D>(device_to_double(v));
}

// 16 bytes of T, for vectorised loads and stores on aligned contiguous data.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kCount = 16 / sizeof(T);
  T v[kCount];
};

__host__ __device__ inline bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

constexpr int kBlockThreads = 256;

// Streaming multiprocessors of `device` (cached).
int multiprocessor_count(int device);

// Blocks for a grid-stride loop over `items` work items: enough to fill the device, no more.
unsigned grid_for(int64_t items, int threads = kBlockThreads);

// The stream kernels on `t`'s device are queued on (this thread's current stream there).
inline cudaStream_t stream_for(const Tensor& t) { return current_stream(t.device().index).handle(); }

// First work item of this thread, and the step, for grid-stride loops.
template <typename Index>
__device__ __forceinline__ Index global_thread() {
  return static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
}
template <typename Index>
__device__ __forceinline__ Index grid_stride() {
  return static_cast<Index>(gridDim.x) * blockDim.x;
}

// Calls launch(calculator, n) with a 32-bit OffsetCalculator when the layout allows, else a 64-bit one.
template <int K, typename Launch>
void launch_strided(const StridedLayout<K>& layout, Launch&& launch) {
  if (layout.fits_32bit())
    launch(OffsetCalculator<K, uint32_t>(layout), static_cast<uint32_t>(layout.numel));
  else
    launch(OffsetCalculator<K, uint64_t>(layout), static_cast<uint64_t>(layout.numel));
}

}  // namespace dcae::cuda
