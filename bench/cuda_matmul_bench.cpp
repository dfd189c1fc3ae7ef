// GPU GEMM throughput (cuBLASLt through the matmul kernels) at the shape, 8192^3, and a DiT-sized linear
// with its bias in the epilogue. The same rows from PyTorch: python bench/torch_ops_peer.py matmul
#include <cstdio>
#include <string>

#include "bench/cuda_bench_timing.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/matmul.h"
#endif

int main() {
#ifndef DCAE_WITH_CUDA
  std::printf("cuda_matmul_bench: this build has no CUDA backend (configure with -DDCAE_CUDA=ON)\n");
  return 0;
#else
  using namespace dcae;
  if (!cuda_available()) {
    std::printf("cuda_matmul_bench: no CUDA GPU is visible\n");
    return 0;
  }
  bench::print_header();
  const int64_t s = 8192;
  for (const auto& [dtype, name] : {std::pair{DType::bf16, "bf16"}, std::pair{DType::f16, "f16"}}) {
    const Tensor a = bench::random_device({s, s}, dtype, 1), b = bench::random_device({s, s}, dtype, 2);
    const double flops = 2.0 * s * s * s, bytes = 3.0 * s * s * dtype_size(dtype);
    for (const auto& [tb, layout] : {std::pair{false, "nn"}, std::pair{true, "nt"}}) {
      const double ms = bench::median_ms([&] { ops::cuda::matmul_forward(a, b, false, tb); });
      bench::print_row(std::string("matmul ") + layout, "8192x8192x8192 " + std::string(name), ms, flops, bytes,
                       "cublasLt");
    }
  }
  // DiT-XL MLP up-projection on 8 x 1024 tokens: x [8192, 1152] @ w[4608, 1152]^T + bias.
  const Tensor x = bench::random_device({8192, 1152}, DType::bf16, 3);
  const Tensor w = bench::random_device({4608, 1152}, DType::bf16, 4), bias = bench::random_device({4608}, DType::bf16, 5);
  const double ms = bench::median_ms([&] { ops::cuda::linear_forward(x, w, bias); });
  bench::print_row("linear+bias", "x[8192,1152] w[4608,1152] bf16", ms, 2.0 * 8192 * 1152 * 4608,
                   2.0 * (8192.0 * 1152 + 4608.0 * 1152 + 8192.0 * 4608 + 4608), "cublasLt epilogue");
  return 0;
#endif
}
