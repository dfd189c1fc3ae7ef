// RMSNorm (DC-AE's trms2d) forward and backward on the GPU at DC-AE shapes: 512 and 1024 channels over batch 8 x
// 64^2 and 32^2 tokens, bf16, NHWC. Prints the table of bench/cuda_bench_timing.h; bench/torch_norm_attention_peer.py prints
// PyTorch's at the same shapes.
#include <cstdio>

#ifdef DCAE_WITH_CUDA
#include "bench/cuda_bench_timing.h"
#include "core/tensor/philox.h"
#include "ops/dispatch.h"
#include "ops/norm.h"

namespace dcae {
namespace {

void run() {
  bench::print_header();
  for (int64_t side : {64, 32}) {
    for (int64_t channels : {512, 1024}) {
      const Shape shape = {8, side, side, channels};
      const std::string name = shape_str(shape) + " bf16";
      const double n = static_cast<double>(shape_numel(shape));
      const Tensor x = bench::gpu_randn(shape, 1), dy = bench::gpu_randn(shape, 2);
      const Tensor w = bench::gpu_randn({channels}, 3), b = bench::gpu_randn({channels}, 4);
      // Forward: read x, write y (2 bytes each); about 4 flops per element.
      const double forward = bench::median_ms([&] { ops::rms_norm(x, w, b, 1e-5); });
      bench::print_row("rms_norm fwd", name, forward, 4 * n, 4 * n);
      Tensor mean, rstd;
      ops::cuda::row_norm_forward(x, w, b, 1e-5, false, mean, rstd);
      // Backward (grad_x, grad_weight, grad_bias): read dy and x, write dx; about 8 flops per element.
      const double backward = bench::median_ms(
          [&] { ops::cuda::row_norm_backward(dy, x, w, mean, rstd, false, {true, true, true}); });
      bench::print_row("rms_norm bwd", name, backward, 8 * n, 6 * n);
    }
  }
}

}  // namespace
}  // namespace dcae
#endif

int main() {
#ifdef DCAE_WITH_CUDA
  if (!dcae::cuda_available()) {
    std::printf("cuda_norm_bench: no CUDA GPU is visible\n");
    return 0;
  }
  dcae::run();
#else
  std::printf("cuda_norm_bench: this build has no CUDA backend (configure with -DDCAE_CUDA=ON)\n");
#endif
  return 0;
}
