#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/bias_activation.h"
#include "ops/cuda/math.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

template <typename C, BiasActivation kAct>
__device__ __forceinline__ C activate(C v) {
  if constexpr (kAct == BiasActivation::relu) return v > C(0) ? v : C(0);
  else if constexpr (kAct == BiasActivation::silu) return v * (C(1) / (C(1) + math::exp(-v)));
  else return v;
}

// Packs of 16 bytes; `packs_per_row` = C / kVec fits 32 bits, as does the pack count (the host checks).
template <typename T, BiasActivation kAct>
__global__ void bias_activation_vec_kernel(T* __restrict__ y, const T* __restrict__ bias, uint32_t packs,
                                           uint32_t packs_per_row) {
  using V = Vec16<T>;
  constexpr int kVec = V::kCount;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < packs; i += gridDim.x * blockDim.x) {
    V v = reinterpret_cast<V*>(y)[i];
    const V b = reinterpret_cast<const V*>(bias)[i % packs_per_row];
#pragma unroll
    for (int k = 0; k < kVec; ++k) v.v[k] = from_compute<T>(activate<ComputeT<T>, kAct>(to_compute(v.v[k]) + to_compute(b.v[k])));
    reinterpret_cast<V*>(y)[i] = v;
  }
}

template <typename T, BiasActivation kAct>
__global__ void bias_activation_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t n, int64_t channels) {
  for (int64_t i = global_thread<int64_t>(); i < n; i += grid_stride<int64_t>())
    y[i] = from_compute<T>(activate<ComputeT<T>, kAct>(to_compute(y[i]) + to_compute(bias[i % channels])));
}

template <BiasActivation kAct>
void launch(const Tensor& y, const Tensor& bias) {
  const int64_t channels = y.size(-1);
  visit_device_float(y.dtype(), "add_bias_activation_", [&]<typename T>() {
    T* py = static_cast<T*>(y.raw_data());
    const T* pb = static_cast<const T*>(bias.raw_data());
    constexpr int kVec = Vec16<T>::kCount;
    const int64_t packs = y.numel() / kVec;
    const cudaStream_t stream = stream_for(y);
    if (channels % kVec == 0 && aligned16(py) && aligned16(pb) && packs < (int64_t{1} << 31)) {
      bias_activation_vec_kernel<T, kAct><<<grid_for(packs), kBlockThreads, 0, stream>>>(
          py, pb, static_cast<uint32_t>(packs), static_cast<uint32_t>(channels / kVec));
    } else {
      bias_activation_kernel<T, kAct><<<grid_for(y.numel()), kBlockThreads, 0, stream>>>(py, pb, y.numel(), channels);
    }
    check_launch("bias_activation_kernel");
  });
}

}  // namespace

void add_bias_activation_(const Tensor& y, const Tensor& bias_in, BiasActivation act) {
  DCAE_CHECK(y.defined() && y.dim() >= 1 && y.is_contiguous() && y.device().is_cuda() && bias_in.dim() == 1 &&
                 bias_in.size(0) == y.size(-1) && bias_in.dtype() == y.dtype() && bias_in.device() == y.device(),
             "add_bias_activation_: y ", y.str(), " must be a contiguous GPU tensor and bias ", bias_in.str(),
             " [C] of its dtype and device");
  if (y.numel() == 0) return;
  const Tensor bias = bias_in.contiguous();
  DeviceGuard guard(y.device().index);
  switch (act) {
    case BiasActivation::none: return launch<BiasActivation::none>(y, bias);
    case BiasActivation::relu: return launch<BiasActivation::relu>(y, bias);
    case BiasActivation::silu: return launch<BiasActivation::silu>(y, bias);
  }
}

}  // namespace dcae::ops::cuda
