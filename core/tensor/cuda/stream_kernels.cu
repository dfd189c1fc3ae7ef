#include <cuda_runtime.h>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"

namespace dcae::cuda {

namespace {

__device__ __forceinline__ uint64_t global_nanoseconds() {
  uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  return now;
}

__global__ void busy_wait_kernel(uint64_t nanoseconds) {
  const uint64_t start = global_nanoseconds();
  while (global_nanoseconds() - start < nanoseconds) __nanosleep(1000);
}

}  // namespace

void busy_wait(const Stream& stream, int64_t microseconds) {
  DeviceGuard guard(stream.device());
  busy_wait_kernel<<<1, 1, 0, stream.handle()>>>(static_cast<uint64_t>(microseconds) * 1000);
  check_launch("busy_wait_kernel");
}

}  // namespace dcae::cuda
