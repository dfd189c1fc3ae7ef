// CUDA side of layer 0: device discovery, device memory, copies that involve a GPU. A first, plain version
// (cudaMalloc per storage, copies staged through contiguous buffers); the caching allocator and streams come with
// the CUDA backend issue.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::cuda {

// Throws naming the call when a CUDA runtime call fails.
void check(int status, const char* call);
#define DCAE_CUDA_CHECK(call) ::dcae::cuda::check(static_cast<int>(call), #call)

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : index_(index) {}
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cuda(index_); }

 private:
  int index_;
};

// Copy between tensors of the same shape where at least one is on a GPU (dtype conversion through the host).
void copy_strided(const Tensor& dst, const Tensor& src);

}  // namespace dcae::cuda
