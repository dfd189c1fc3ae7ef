// Attention on the GPU at DC-AE / diffusion-transformer shapes, bf16:
//   ReLU linear attention (LiteMLA core): C = 1024, 32 heads of 32, batch 8, 16^2 and 32^2 tokens, NHWC qkv;
//   softmax attention: batch 32, 16 heads of 72 (and 64), 64 / 256 / 1024 tokens (DiT-XL on DC-AE latents and
//   beyond), bf16 and f16. `--sdpa` prints only these rows.
// Forward and backward. Prints the table of bench/cuda_bench_timing.h; bench/torch_norm_attention_peer.py prints PyTorch's.
#include <cmath>
#include <cstdio>
#include <string>

#ifdef DCAE_WITH_CUDA
#include "bench/cuda_bench_timing.h"
#include "core/tensor/philox.h"
#include "ops/attention.h"
#include "ops/dispatch.h"

namespace dcae {
namespace {

void linear_attention() {
  const int64_t channels = 1024, head_dim = 32, heads = channels / head_dim, batch = 8;
  for (int64_t side : {16, 32}) {
    const Shape shape = {batch, side, side, 3 * channels};
    const std::string name = shape_str(shape) + " d32 bf16";
    const double tokens = static_cast<double>(batch * side * side);
    const Tensor qkv = bench::gpu_randn(shape, 1), grad = bench::gpu_randn({batch, side, side, channels}, 2);
    // Forward: M = K^T [V, 1] and O = Q M, 2 d (d+1) flops per token and head each; read qkv, write out.
    const double unit = 2.0 * head_dim * (head_dim + 1) * heads * tokens;
    const double forward = bench::median_ms([&] { ops::relu_linear_attention(qkv, head_dim); });
    bench::print_row("relu_linear_attention fwd", name, forward, 2 * unit, tokens * 4 * channels * 2);
    // Backward: M, O, dq, dM, dk, dv; read qkv and the gradient, write dqkv.
    const double backward = bench::median_ms(
        [&] { ops::cuda::relu_linear_attention_backward(grad, qkv, head_dim, 1e-15, false); });
    bench::print_row("relu_linear_attention bwd", name, backward, 6 * unit, tokens * 7 * channels * 2);
  }
}

// Softmax attention: the DiT-XL head (72) and 64, bf16 and f16.
void softmax_attention() {
  const int64_t batch = 32, heads = 16;
  for (int64_t head_dim : {72, 64})
    for (DType dtype : {DType::bf16, DType::f16})
      for (int64_t tokens : {64, 256, 1024}) {
        const Shape shape = {batch, heads, tokens, head_dim};
        const std::string name = shape_str(shape) + (dtype == DType::bf16 ? " bf16" : " f16");
        const Tensor q = bench::gpu_randn(shape, 3, dtype), k = bench::gpu_randn(shape, 4, dtype);
        const Tensor v = bench::gpu_randn(shape, 5, dtype), g = bench::gpu_randn(shape, 6, dtype);
        const double elements = static_cast<double>(shape_numel(shape));
        const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
        // FlashAttention's accounting: 4 B H L^2 D forward (two GEMMs), 2.5 times that backward.
        const double flops = 4.0 * batch * heads * static_cast<double>(tokens) * tokens * head_dim;
        const double forward = bench::median_ms([&] { ops::scaled_dot_product_attention(q, k, v); });
        bench::print_row("sdpa fwd", name, forward, flops, 4 * elements * 2);
        Tensor lse;
        const Tensor out = ops::cuda::attention_forward(q, k, v, Tensor(), scale, lse);
        const double backward = bench::median_ms(
            [&] { ops::cuda::attention_backward(g, q, k, v, Tensor(), scale, lse, out, false); });
        bench::print_row("sdpa bwd", name, backward, 2.5 * flops, 8 * elements * 2);
      }
}

}  // namespace
}  // namespace dcae
#endif

int main(int argc, char** argv) {
#ifdef DCAE_WITH_CUDA
  if (!dcae::cuda_available()) {
    std::printf("cuda_attention_bench: no CUDA GPU is visible\n");
    return 0;
  }
  // --sdpa: only the softmax attention rows (what bench/torch_norm_attention_peer.py --ours compares against).
  const bool sdpa_only = argc > 1 && std::string(argv[1]) == "--sdpa";
  dcae::bench::print_header();
  if (!sdpa_only) dcae::linear_attention();
  dcae::softmax_attention();
#else
  std::printf("cuda_attention_bench: this build has no CUDA backend (configure with -DDCAE_CUDA=ON)\n");
#endif
  return 0;
}
