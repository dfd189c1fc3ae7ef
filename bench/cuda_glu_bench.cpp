// GLUMBConv's gate (out = a * silu(g) over the two channel halves, ops::silu_gate) forward and backward on the GPU,
// bf16 NHWC, at the DC-AE EfficientViT stages' widths: C = 512 at 32^2 and C = 1024 at 16^2 tokens (the gate input
// has 8C channels), batch 8. Prints the table of bench/cuda_bench_timing.h; bench/torch_norm_attention_peer.py prints PyTorch's.
#include <cstdio>

#ifdef DCAE_WITH_CUDA
#include "bench/cuda_bench_timing.h"
#include "core/tensor/philox.h"
#include "ops/dispatch.h"
#include "ops/glu.h"

namespace dcae {
namespace {

void run() {
  bench::print_header();
  for (const auto& [side, channels] : {std::pair<int64_t, int64_t>{32, 512}, std::pair<int64_t, int64_t>{16, 1024}}) {
    const Shape shape = {8, side, side, 8 * channels};
    const std::string name = shape_str(shape) + " bf16";
    const double outputs = static_cast<double>(shape_numel(shape) / 2);
    const Tensor x = bench::gpu_randn(shape, 1), dy = bench::gpu_randn({8, side, side, 4 * channels}, 2);
    // Forward: read 2 values, write 1 per output (bf16); ~6 flops with the exponential counted as one.
    const double forward = bench::median_ms([&] { ops::silu_gate(x); });
    bench::print_row("silu_gate fwd", name, forward, 6 * outputs, 6 * outputs);
    // Backward: read x (2) and dy (1), write dx (2) per output.
    const double backward = bench::median_ms([&] { ops::cuda::silu_gate_backward(dy, x); });
    bench::print_row("silu_gate bwd", name, backward, 12 * outputs, 10 * outputs);
  }
}

}  // namespace
}  // namespace dcae
#endif

int main() {
#ifdef DCAE_WITH_CUDA
  if (!dcae::cuda_available()) {
    std::printf("cuda_glu_bench: no CUDA GPU is visible\n");
    return 0;
  }
  dcae::run();
#else
  std::printf("cuda_glu_bench: this build has no CUDA backend (configure with -DDCAE_CUDA=ON)\n");
#endif
  return 0;
}
