// Shared pieces of the RMSNorm / LayerNorm kernels (row_norm.cu, row_norm_backward.cu): launch shapes and per-channel
// parameter loads.
#pragma once
#include "ops/cuda/norm_common.cuh"

namespace dcae::ops::cuda::norm_detail {

constexpr int kRowsPerBlock = 8;         // warps (rows in flight) per block of the warp-per-row kernels
constexpr int kWarpBlockThreads = kWarp * kRowsPerBlock;
constexpr int kMaxPacks = 8;             // 16-byte packs per lane the forward holds (bf16: C <= 2048)
constexpr int kMaxBackwardPacks = 4;     // the backward also holds the gradient and parameter partials
constexpr int64_t kBlockRowChannels = 1024;  // scalar path: wider rows get a block each

// Pack i of a per-channel parameter as compute values; `fill` when the parameter is absent.
template <typename T, int kVec>
__device__ __forceinline__ void load_param_pack(const T* p, int i, ComputeT<T> fill, ComputeT<T> (&out)[kVec]) {
  if (p == nullptr) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) out[k] = fill;
    return;
  }
  const Vec16<T> v = reinterpret_cast<const Vec16<T>*>(p)[i];
#pragma unroll
  for (int k = 0; k < kVec; ++k) out[k] = to_compute(v.v[k]);
}

template <typename T>
__device__ __forceinline__ ComputeT<T> param_or(const T* p, int64_t c, ComputeT<T> fill) {
  return p == nullptr ? fill : to_compute(p[c]);
}

// Calls fn.template operator()<kPacks>() with the register packs per lane rounded up to 1, 2, 4 or 8.
template <typename Fn>
void visit_packs(int64_t packs, Fn&& fn) {
  if (packs <= 1) return fn.template operator()<1>();
  if (packs <= 2) return fn.template operator()<2>();
  if (packs <= 4) return fn.template operator()<4>();
  return fn.template operator()<8>();
}

// Launch shape of the scalar kernels: narrow rows share a block a warp each, wide rows get a block.
inline dim3 generic_block(int64_t channels) {
  return channels > kBlockRowChannels ? dim3(kBlockThreads, 1) : dim3(kWarp, kRowsPerBlock);
}
inline unsigned generic_grid(int64_t rows, int64_t channels) {
  return grid_for(rows, channels > kBlockRowChannels ? 1 : kRowsPerBlock);
}

inline bool all_aligned(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (t->defined() && !aligned16(t->raw_data())) return false;
  return true;
}

}  // namespace dcae::ops::cuda::norm_detail
