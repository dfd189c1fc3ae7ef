// Residual adds fused into the pass that produces their other operand (ops/cuda/fused_residual.h).
#include <type_traits>

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/fused_residual.h"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

// out = residual + y * scale[c] + shift[c] over contiguous [rows, C]. Vectorised: 16-byte packs of T, 32-bit
// indices (the host checks), scale/shift read as whole float4s. Scalar otherwise. scale and shift are fp32 (f64
// for f64 tensors): BatchNorm's statistics folded per channel.
template <typename T>
__global__ void residual_channel_affine_vec_kernel(const T* __restrict__ residual, const T* __restrict__ y,
                                                   const float* __restrict__ scale, const float* __restrict__ shift,
                                                   T* __restrict__ out, uint32_t packs, uint32_t packs_per_row) {
  using V = Vec16<T>;
  constexpr int kVec = V::kCount;  // 8 for bf16/f16, 4 for f32: whole float4s of scale and shift
  static_assert(kVec % 4 == 0, "vectorised path is for 2- and 4-byte types");
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < packs; i += gridDim.x * blockDim.x) {
    const V r = reinterpret_cast<const V*>(residual)[i];
    const V v = reinterpret_cast<const V*>(y)[i];
    const uint32_t c0 = (i % packs_per_row) * kVec;
    V o;
#pragma unroll
    for (int q = 0; q < kVec / 4; ++q) {
      const float4 s = reinterpret_cast<const float4*>(scale + c0)[q];
      const float4 t = reinterpret_cast<const float4*>(shift + c0)[q];
      const float sv[4] = {s.x, s.y, s.z, s.w}, tv[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
      for (int k = 0; k < 4; ++k)
        o.v[q * 4 + k] = from_compute<T>(to_compute(r.v[q * 4 + k]) + to_compute(v.v[q * 4 + k]) * sv[k] + tv[k]);
    }
    reinterpret_cast<V*>(out)[i] = o;
  }
}

template <typename T>
__global__ void residual_channel_affine_kernel(const T* __restrict__ residual, const T* __restrict__ y,
                                               const ComputeT<T>* __restrict__ scale,
                                               const ComputeT<T>* __restrict__ shift, T* __restrict__ out,
                                               int64_t items, int64_t channels) {
  for (int64_t i = global_thread<int64_t>(); i < items; i += grid_stride<int64_t>()) {
    const int64_t c = i % channels;
    out[i] = from_compute<T>(to_compute(residual[i]) + to_compute(y[i]) * scale[c] + shift[c]);
  }
}

}  // namespace

Tensor residual_channel_affine(const Tensor& residual_in, const Tensor& y_in, const Tensor& scale_in,
                               const Tensor& shift_in) {
  DCAE_CHECK(residual_in.shape() == y_in.shape() && residual_in.dtype() == y_in.dtype() &&
                 residual_in.device() == y_in.device() && y_in.device().is_cuda(),
             "residual_channel_affine: residual ", residual_in.str(), " and y ", y_in.str(),
             " must be GPU tensors of one shape and dtype");
  const int64_t channels = y_in.dim() == 0 ? 1 : y_in.size(-1);
  const DType stat = y_in.dtype() == DType::f64 ? DType::f64 : DType::f32;
  DCAE_CHECK(scale_in.numel() == channels && shift_in.numel() == channels, "residual_channel_affine: scale ",
             scale_in.str(), " and shift ", shift_in.str(), " need one value per channel of y ", y_in.str());
  const Tensor residual = residual_in.contiguous(), y = y_in.contiguous();
  const Tensor scale = scale_in.to(stat).contiguous(), shift = shift_in.to(stat).contiguous();
  Tensor out = empty(y.shape(), y.dtype(), y.device());
  if (out.numel() == 0) return out;
  DeviceGuard guard(y.device().index);
  const cudaStream_t stream = stream_for(y);
  visit_device_float(y.dtype(), "residual_channel_affine", [&]<typename T>() {
    using C = ComputeT<T>;
    const T* pr = static_cast<const T*>(residual.raw_data());
    const T* py = static_cast<const T*>(y.raw_data());
    const C* ps = static_cast<const C*>(scale.raw_data());
    const C* pt = static_cast<const C*>(shift.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    constexpr int kVec = Vec16<T>::kCount;
    const int64_t packs = y.numel() / kVec;
    bool vectorised = false;
    if constexpr (std::is_same_v<C, float>)
      vectorised = channels % kVec == 0 && aligned16(pr) && aligned16(py) && aligned16(po) && aligned16(ps) &&
                   aligned16(pt) && packs < (int64_t{1} << 31);
    if constexpr (std::is_same_v<C, float>) {
      if (vectorised)
        residual_channel_affine_vec_kernel<T><<<grid_for(packs), kBlockThreads, 0, stream>>>(
            pr, py, ps, pt, po, static_cast<uint32_t>(packs), static_cast<uint32_t>(channels / kVec));
    }
    if (!vectorised)
      residual_channel_affine_kernel<T><<<grid_for(y.numel()), kBlockThreads, 0, stream>>>(pr, py, ps, pt, po,
                                                                                          y.numel(), channels);
    check_launch("residual_channel_affine_kernel");
  });
  return out;
}

}  // namespace dcae::ops::cuda
