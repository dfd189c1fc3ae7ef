#include "ops/cuda/conv2d_flip.h"

#include <cstdint>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

// One thread per output element, output order (o fastest) so the writes coalesce; elements move as raw words of
// their size, since the values are only copied.
template <typename Word>
__global__ void flip_transpose_kernel(const Word* w, Word* out, int64_t o_count, int64_t i_count, int64_t kh,
                                      int64_t kw, int64_t total) {
  for (int64_t idx = global_thread<int64_t>(); idx < total; idx += grid_stride<int64_t>()) {
    const int64_t o = idx % o_count;
    int64_t rest = idx / o_count;
    const int64_t s = rest % kw;
    rest /= kw;
    const int64_t r = rest % kh, i = rest / kh;
    out[idx] = w[((o * i_count + i) * kh + (kh - 1 - r)) * kw + (kw - 1 - s)];
  }
}

}  // namespace

Tensor flipped_transposed_filter(const Tensor& weight) {
  DCAE_CHECK(weight.dim() == 4 && weight.device().is_cuda() && weight.is_contiguous(),
             "flipped_transposed_filter: expected a contiguous 4-D [O, I, kh, kw] weight on the GPU, got ",
             shape_str(weight.shape()), " on ", weight.device());
  const int64_t o = weight.size(0), i = weight.size(1), kh = weight.size(2), kw = weight.size(3);
  Tensor out = empty({i, kh, kw, o}, weight.dtype(), weight.device());
  const int64_t total = out.numel();
  if (total == 0) return out;
  DeviceGuard guard(weight.device().index);
  const cudaStream_t stream = stream_for(weight);
  const auto launch = [&]<typename Word>() {
    flip_transpose_kernel<Word><<<grid_for(total), kBlockThreads, 0, stream>>>(
        static_cast<const Word*>(weight.raw_data()), static_cast<Word*>(out.raw_data()), o, i, kh, kw, total);
  };
  switch (dtype_size(weight.dtype())) {
    case 2: launch.operator()<uint16_t>(); break;
    case 4: launch.operator()<uint32_t>(); break;
    case 8: launch.operator()<uint64_t>(); break;
    default: DCAE_FAIL("flipped_transposed_filter: unsupported dtype ", weight.dtype());
  }
  check_launch("flip_transpose_kernel");
  return out;
}

}  // namespace dcae::ops::cuda
