// The CUDA runtime behind the caching allocator, and the device hooks of layer 0 (allocator_for, cuda_available).
#include <cuda_runtime.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/cuda/caching_allocator.h"
#include "core/tensor/cuda/check.h"

namespace dcae {

namespace cuda {
namespace {

class CudaMemoryApi final : public DeviceMemoryApi {
 public:
  explicit CudaMemoryApi(int device) : device_(device) {}

  void* malloc(size_t bytes) override {
    DeviceGuard guard(device_);
    void* ptr = nullptr;
    const cudaError_t status = cudaMalloc(&ptr, bytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it so later calls do not report it
      return nullptr;
    }
    DCAE_CUDA_CHECK(status);
    return ptr;
  }
  void free(void* ptr) override {
    DeviceGuard guard(device_);
    DCAE_CUDA_CHECK(cudaFree(ptr));
  }
  void memory_info(size_t& free_bytes, size_t& total_bytes) override {
    DeviceGuard guard(device_);
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      cudaGetLastError();
      free_bytes = total_bytes = 0;
    }
  }
  StreamHandle current_stream() override { return cuda::current_stream(device_).handle(); }
  void* create_event() override {
    DeviceGuard guard(device_);
    cudaEvent_t event = nullptr;
    DCAE_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    return event;
  }
  void destroy_event(void* event) override { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }
  void record_event(void* event, StreamHandle stream) override {
    DeviceGuard guard(device_);
    DCAE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), stream));
  }
  bool event_done(void* event) override {
    const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (status == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
    DCAE_CUDA_CHECK(status);
    return true;
  }
  void wait_event(void* event) override { DCAE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }
  void synchronize() override {
    DeviceGuard guard(device_);
    DCAE_CUDA_CHECK(cudaDeviceSynchronize());
  }
  void fill_bytes(void* ptr, uint8_t value, size_t bytes, StreamHandle stream) override {
    DeviceGuard guard(device_);
    DCAE_CUDA_CHECK(cudaMemsetAsync(ptr, value, bytes, stream));
  }

 private:
  int device_;
};

}  // namespace

CachingAllocator& caching_allocator(int device) {
  // One per device, made together on first use (no CUDA calls until they allocate), never destroyed: tensors with
  // static lifetime may be freed after main, when the runtime may be gone.
  static const std::vector<CachingAllocator*> allocators = [] {
    std::vector<CachingAllocator*> all;
    const char* no_caching = std::getenv("DCAE_CUDA_NO_CACHING");
    for (int d = 0; d < device_count(); ++d) {
      all.push_back(new CachingAllocator(d, std::make_unique<CudaMemoryApi>(d)));
      if (no_caching != nullptr && std::string(no_caching) == "1") all.back()->set_caching(false);
    }
    return all;
  }();
  check_device(device);
  return *allocators[device];
}

}  // namespace cuda

bool cuda_available() { return cuda::device_count() > 0; }

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) return CpuAllocator::instance();
  return cuda::caching_allocator(device.index);
}

}  // namespace dcae
