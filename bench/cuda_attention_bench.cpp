// Attention on the GPU at DC-AE / diffusion-transformer shapes, bf16:
//   ReLU linear attention (LiteMLA core): C = 1024, 32 heads of 32, batch 8, 16^2 and 32^2 tokens, NHWC qkv;
//   softmax attention: batch 32, 16 heads of 72 (and 64), 64 / 256 / 1024 tokens (DiT-XL on DC-AE latents and
//   beyond), bf16 and f16, each timed three times: our kernels ("impl" mma), cuDNN's fused flash attention ("impl"
//   cudnn engine N; our kernels' name where cuDNN had no engine) and the automatic choice. `--sdpa` prints only
//   these rows.
// Forward and backward. Prints the table of bench/cuda_bench_timing.h; bench/torch_norm_attention_peer.py prints PyTorch's.
// `--probe` prints what cuDNN answers for the SDPA graphs at the bench shapes and a few odd ones (engines offered,
// which finalize, workspace, errors) and how far its results are from ours. `--crossover` times both at 64 to 256
// tokens (where the automatic choice switches).
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#ifdef DCAE_WITH_CUDA
#include "bench/cuda_bench_timing.h"
#include "core/tensor/philox.h"
#include "ops/attention.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/cudnn_attention.h"
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

// Softmax attention: the DiT-XL head (72) and 64, bf16 and f16, with our kernels, with cuDNN's and as dispatched.
void softmax_attention() {
  using ops::cuda::AttentionBackend;
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
        // In this order (bench/torch_norm_attention_peer.py reads the rows so): ours, cuDNN, the automatic choice.
        for (AttentionBackend backend : {AttentionBackend::own, AttentionBackend::cudnn, AttentionBackend::automatic}) {
          const AttentionBackend previous = ops::cuda::set_attention_backend(backend);
          const double forward = bench::median_ms([&] { ops::scaled_dot_product_attention(q, k, v); });
          bench::print_row("sdpa fwd", name, forward, flops, 4 * elements * 2, ops::cuda::last_attention_kernels());
          Tensor lse;
          const Tensor out = ops::cuda::attention_forward(q, k, v, Tensor(), scale, lse);
          const double backward = bench::median_ms(
              [&] { ops::cuda::attention_backward(g, q, k, v, Tensor(), scale, lse, out, false); });
          bench::print_row("sdpa bwd", name, backward, 2.5 * flops, 8 * elements * 2,
                           ops::cuda::last_attention_kernels());
          ops::cuda::set_attention_backend(previous);
        }
      }
}

// Where cuDNN starts to beat our kernels (kCudnnAttention{Forward,Backward}MinKeys): both from 64 to 256 tokens, bf16.
void crossover() {
  using ops::cuda::AttentionBackend;
  const int64_t batch = 32, heads = 16;
  for (int64_t head_dim : {72, 64})
    for (int64_t tokens : {64, 96, 128, 160, 192, 256}) {
      const Shape shape = {batch, heads, tokens, head_dim};
      const std::string name = shape_str(shape) + " bf16";
      const Tensor q = bench::gpu_randn(shape, 3), k = bench::gpu_randn(shape, 4), v = bench::gpu_randn(shape, 5);
      const Tensor g = bench::gpu_randn(shape, 6);
      const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
      const double flops = 4.0 * batch * heads * static_cast<double>(tokens) * tokens * head_dim;
      const double elements = static_cast<double>(shape_numel(shape));
      for (AttentionBackend backend : {AttentionBackend::own, AttentionBackend::cudnn}) {
        const AttentionBackend previous = ops::cuda::set_attention_backend(backend);
        const double forward = bench::median_ms([&] { ops::scaled_dot_product_attention(q, k, v); });
        bench::print_row("sdpa fwd", name, forward, flops, 4 * elements * 2, ops::cuda::last_attention_kernels());
        Tensor lse;
        const Tensor out = ops::cuda::attention_forward(q, k, v, Tensor(), scale, lse);
        const double backward = bench::median_ms(
            [&] { ops::cuda::attention_backward(g, q, k, v, Tensor(), scale, lse, out, false); });
        bench::print_row("sdpa bwd", name, backward, 2.5 * flops, 8 * elements * 2,
                         ops::cuda::last_attention_kernels());
        ops::cuda::set_attention_backend(previous);
      }
    }
}

// Relative L2 distance between two tensors of one shape (as doubles on the host).
double relative_l2(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to(Device::cpu()).to_vector<double>(), y = b.to(Device::cpu()).to_vector<double>();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff += (x[i] - y[i]) * (x[i] - y[i]);
    norm += y[i] * y[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

void print_report(const char* direction, const std::string& name,
                  const ops::cuda::attention_detail::CudnnAttentionReport& report) {
  std::printf("probe %s %s: %s, %.1f ms to build and finalize every plan, %zu engine configs\n", direction,
              name.c_str(), report.refusal.empty() ? "graph accepted" : report.refusal.c_str(), report.build_ms,
              report.engines.size());
  for (const auto& engine : report.engines)
    std::printf("  engine %lld (%s%s): %s, workspace %lld B %s\n", static_cast<long long>(engine.engine_id),
                engine.heuristic.c_str(), engine.runtime_compiled ? ", runtime compiled" : "",
                engine.finalized ? "plan ok" : "plan refused", static_cast<long long>(engine.workspace_bytes),
                engine.error.c_str());
}

// What cuDNN answers for the SDPA graphs, and cuDNN's results against ours at a smaller batch.
void probe() {
  using namespace ops::cuda::attention_detail;
  using ops::cuda::AttentionBackend;
  std::printf("cuDNN at run time: %lld\n", static_cast<long long>(cudnn_runtime_version()));
  struct Problem {
    int64_t batch, heads, lq, lk, d;
    DType dtype;
  };
  const std::vector<Problem> problems = {
      {32, 16, 64, 64, 72, DType::bf16},    {32, 16, 256, 256, 72, DType::bf16}, {32, 16, 1024, 1024, 72, DType::bf16},
      {32, 16, 1024, 1024, 64, DType::f16}, {1, 2, 77, 77, 72, DType::bf16},     {1, 2, 70, 128, 64, DType::f16},
      {1, 2, 40, 128, 264, DType::bf16},    {1, 2, 33, 256, 256, DType::bf16},   {1, 1, 1, 1, 8, DType::bf16},
  };
  for (const Problem& pr : problems) {
    AttentionParams p;
    p.batch = pr.batch;
    p.heads = pr.heads;
    p.lq = pr.lq;
    p.lk = pr.lk;
    p.d = p.dv_dim = pr.d;
    p.q_strides = p.o_strides = p.grad_strides = {pr.heads * pr.lq * pr.d, pr.lq * pr.d, pr.d};
    p.k_strides = p.v_strides = {pr.heads * pr.lk * pr.d, pr.lk * pr.d, pr.d};
    p.scale = 1.0 / std::sqrt(static_cast<double>(pr.d));
    const std::string name = shape_str({pr.batch, pr.heads, pr.lq, pr.lk, pr.d}) + " " + dtype_name(pr.dtype);
    for (bool backward : {false, true}) {
      try {
        print_report(backward ? "bwd" : "fwd", name, cudnn_attention_report(p, pr.dtype, 0, backward));
      } catch (const std::exception& error) {
        std::printf("probe %s %s: error %s\n", backward ? "bwd" : "fwd", name.c_str(), error.what());
      }
    }
    // Results of both implementations on the same inputs (batch at most 2).
    try {
      const int64_t b = std::min<int64_t>(pr.batch, 2);
      const Tensor q = bench::gpu_randn({b, pr.heads, pr.lq, pr.d}, 7, pr.dtype);
      const Tensor k = bench::gpu_randn({b, pr.heads, pr.lk, pr.d}, 8, pr.dtype);
      const Tensor v = bench::gpu_randn({b, pr.heads, pr.lk, pr.d}, 9, pr.dtype);
      const Tensor g = bench::gpu_randn({b, pr.heads, pr.lq, pr.d}, 10, pr.dtype);
      std::vector<Tensor> results[2];
      std::string kernels[2];
      for (int i = 0; i < 2; ++i) {
        const AttentionBackend previous =
            ops::cuda::set_attention_backend(i == 0 ? AttentionBackend::own : AttentionBackend::cudnn);
        Tensor lse;
        const Tensor out = ops::cuda::attention_forward(q, k, v, Tensor(), p.scale, lse);
        kernels[i] = ops::cuda::last_attention_kernels();
        std::vector<Tensor> grads = ops::cuda::attention_backward(g, q, k, v, Tensor(), p.scale, lse, out, false);
        kernels[i] += " / " + ops::cuda::last_attention_kernels();
        results[i] = {out, lse, grads[0], grads[1], grads[2]};
        ops::cuda::set_attention_backend(previous);
      }
      std::printf("  %s vs %s, relative L2: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", kernels[1].c_str(),
                  kernels[0].c_str(), relative_l2(results[1][0], results[0][0]),
                  relative_l2(results[1][1], results[0][1]), relative_l2(results[1][2], results[0][2]),
                  relative_l2(results[1][3], results[0][3]), relative_l2(results[1][4], results[0][4]));
    } catch (const std::exception& error) {
      std::printf("  comparison failed: %s\n", error.what());
    }
    std::fflush(stdout);
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
  if (argc > 1 && std::string(argv[1]) == "--probe") {
    dcae::probe();
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "--crossover") {
    dcae::bench::print_header();
    dcae::crossover();
    return 0;
  }
  dcae::bench::print_header();
  if (!sdpa_only) dcae::linear_attention();
  dcae::softmax_attention();
#else
  std::printf("cuda_attention_bench: this build has no CUDA backend (configure with -DDCAE_CUDA=ON)\n");
#endif
  return 0;
}
