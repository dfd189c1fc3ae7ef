#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"

namespace dcae::cuda {

int multiprocessor_count(int device) {
  static const std::vector<int> counts = [] {
    std::vector<int> all(device_count(), 0);
    for (int d = 0; d < device_count(); ++d)
      DCAE_CUDA_CHECK(cudaDeviceGetAttribute(&all[d], cudaDevAttrMultiProcessorCount, d));
    return all;
  }();
  check_device(device);
  return counts[device];
}

unsigned grid_for(int64_t items, int threads) {
  // 16 blocks per multiprocessor keep every SM busy; grid-stride loops cover the rest.
  const int64_t cap = int64_t{16} * multiprocessor_count(current_device());
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, cap));
}

}  // namespace dcae::cuda
