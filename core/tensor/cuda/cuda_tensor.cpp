#include "core/tensor/cuda/cuda_tensor.h"

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <vector>

namespace dcae {

bool cuda_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) return CpuAllocator::instance();
  static std::mutex mutex;
  static std::vector<std::unique_ptr<cuda::CudaAllocator>> allocators;
  std::lock_guard<std::mutex> lock(mutex);
  int count = 0;
  DCAE_CHECK(cudaGetDeviceCount(&count) == cudaSuccess && device.index < count, "cannot allocate on ", device,
             ": ", count, " CUDA devices are visible");
  if (allocators.empty()) allocators.resize(count);
  if (!allocators[device.index]) allocators[device.index] = std::make_unique<cuda::CudaAllocator>(device.index);
  return *allocators[device.index];
}

namespace cuda {

void check(int status, const char* call) {
  DCAE_CHECK(status == cudaSuccess, call, " failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)));
}

void* CudaAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  DCAE_CUDA_CHECK(cudaSetDevice(index_));
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, nbytes);
  if (status != cudaSuccess) {
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    DCAE_FAIL("out of memory on cuda:", index_, ": asked for ", nbytes, " bytes, ", free_bytes, " of ", total,
              " bytes free (", cudaGetErrorString(status), ")");
  }
  return ptr;
}

void CudaAllocator::deallocate(void* ptr, size_t) {
  if (ptr != nullptr) cudaFree(ptr);
}

void copy_strided(const Tensor& dst, const Tensor& src) {
  // Contiguous, same dtype: one memcpy in whichever direction.
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    DCAE_CUDA_CHECK(cudaMemcpy(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDefault));
    return;
  }
  // Otherwise stage through host tensors (slow path until the backend has strided copy kernels).
  Tensor host_src = src;
  if (!src.device().is_cpu()) {
    host_src = empty(src.shape(), src.dtype());
    Tensor packed = src.is_contiguous() ? src : Tensor();
    DCAE_CHECK(packed.defined(), "strided copy out of ", src.str(), " needs the CUDA backend's copy kernel");
    DCAE_CUDA_CHECK(cudaMemcpy(host_src.raw_data(), packed.raw_data(), packed.nbytes(), cudaMemcpyDeviceToHost));
  }
  Tensor host_dst = empty(dst.shape(), dst.dtype());
  host_dst.copy_(host_src);
  DCAE_CHECK(dst.is_contiguous(), "strided copy into ", dst.str(), " needs the CUDA backend's copy kernel");
  DCAE_CUDA_CHECK(cudaMemcpy(dst.raw_data(), host_dst.raw_data(), dst.nbytes(), cudaMemcpyDefault));
}

}  // namespace cuda
}  // namespace dcae
