// Picks the kernel for a tensor's device. Every kernel family declares the same functions in ops/cpu/<family>.h
// and ops/cuda/<family>.h; an op calls DCAE_KERNEL(device, function, args...).
//
// Families opt into CUDA one at a time: ops/cuda/kernels.h includes the CUDA header of every family that has
// CUDA kernels, and that header marks each kernel it declares with
//   #define DCAE_CUDA_KERNEL_<function> ~,
// DCAE_KERNEL routes CUDA tensors to ops::cuda::<function> when the mark is visible, and otherwise throws
// "<function> has no CUDA kernel yet" - a missing kernel is never a silent round trip through the host.
#pragma once
#include "core/tensor/tensor.h"

#ifdef DCAE_WITH_CUDA
#include "ops/cuda/kernels.h"
#endif

namespace dcae::ops::detail {
inline void require_cpu(Device device, const char* kernel) {
#ifdef DCAE_WITH_CUDA
  DCAE_CHECK(device.is_cpu(), kernel, " has no CUDA kernel yet (called for a tensor on ", device, ")");
#else
  DCAE_CHECK(device.is_cpu(), "kernel ", kernel, " called for ", device, ", but this build has no CUDA backend");
#endif
}
}  // namespace dcae::ops::detail

// DCAE_DETAIL_HAS_CUDA_KERNEL(fn) is 1 when DCAE_CUDA_KERNEL_fn is defined as `~,`, else 0 (the mark turns the
// argument list into `~, 1, 0`, whose second item is 1; unmarked it stays `DCAE_CUDA_KERNEL_fn 1, 0`).
#define DCAE_DETAIL_SECOND(first, second, ...) second
#define DCAE_DETAIL_SECOND_OF(...) DCAE_DETAIL_SECOND(__VA_ARGS__)
#define DCAE_DETAIL_CAT_(a, b) a##b
#define DCAE_DETAIL_CAT(a, b) DCAE_DETAIL_CAT_(a, b)

#if defined(DCAE_WITH_CUDA)
#define DCAE_DETAIL_HAS_CUDA_KERNEL(fn) DCAE_DETAIL_SECOND_OF(DCAE_CUDA_KERNEL_##fn 1, 0)
#else
#define DCAE_DETAIL_HAS_CUDA_KERNEL(fn) 0
#endif

#define DCAE_DETAIL_KERNEL_1(device, fn, ...) \
  ((device).is_cuda() ? ::dcae::ops::cuda::fn(__VA_ARGS__) : ::dcae::ops::cpu::fn(__VA_ARGS__))
#define DCAE_DETAIL_KERNEL_0(device, fn, ...) \
  (::dcae::ops::detail::require_cpu((device), #fn), ::dcae::ops::cpu::fn(__VA_ARGS__))
#define DCAE_DETAIL_KERNEL(has_cuda, ...) DCAE_DETAIL_CAT(DCAE_DETAIL_KERNEL_, has_cuda)(__VA_ARGS__)

#define DCAE_KERNEL(device, fn, ...) DCAE_DETAIL_KERNEL(DCAE_DETAIL_HAS_CUDA_KERNEL(fn), device, fn, __VA_ARGS__)
