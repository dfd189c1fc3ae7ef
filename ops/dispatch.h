// Picks the kernel for a tensor's device. Every kernel family declares the same functions in ops/cpu/<family>.h
// and ops/cuda/<family>.h; an op calls DCAE_KERNEL(device, function, args...).
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::detail {
inline void require_cpu(Device device, const char* kernel) {
  DCAE_CHECK(device.is_cpu(), "kernel ", kernel, " called for ", device, ", but this build has no CUDA backend");
}
}  // namespace dcae::ops::detail

#if defined(DCAE_WITH_CUDA) && defined(DCAE_CUDA_KERNELS_READY)
#define DCAE_KERNEL(device, fn, ...) \
  ((device).is_cuda() ? ::dcae::ops::cuda::fn(__VA_ARGS__) : ::dcae::ops::cpu::fn(__VA_ARGS__))
#else
#define DCAE_KERNEL(device, fn, ...) \
  (::dcae::ops::detail::require_cpu((device), #fn), ::dcae::ops::cpu::fn(__VA_ARGS__))
#endif
