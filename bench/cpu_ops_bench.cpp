// CPU throughput of the GEMM and conv2d kernels, forward and backward (through autograd), in f32.
// Prints median milliseconds over a few repeats and the achieved GFLOP/s (a multiply-add counts as 2 FLOPs).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/autograd/engine.h"
#include "core/tensor/philox.h"
#include "ops/conv2d.h"
#include "ops/matmul.h"

namespace {

using dcae::Tensor;

Tensor random_f32(const dcae::Shape& shape, uint64_t seed, bool trainable) {
  dcae::Generator gen(seed);
  Tensor t = dcae::empty(shape, dcae::DType::f32);
  dcae::normal_(t, 0.0, 1.0, gen);
  return t.set_requires_grad(trainable);
}

// Median wall time of `fn` in milliseconds after one warm-up call.
double median_ms(const std::function<void()>& fn, int repeats) {
  fn();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void report(const char* name, const char* pass, double ms, double flops) {
  std::printf("| %-34s | %-8s | %9.2f | %8.1f |\n", name, pass, ms, flops / (ms * 1e6));
}

// Times forward alone, then backward alone (the forward that builds the graph is outside the timed region).
void bench(const char* name, const std::vector<Tensor>& leaves, const std::function<Tensor()>& forward,
           double forward_flops, double backward_flops, int repeats) {
  report(name, "forward", median_ms([&] { forward(); }, repeats), forward_flops);
  Tensor out, grad;
  std::vector<double> times;
  for (int r = 0; r <= repeats; ++r) {
    for (const Tensor& t : leaves) t.set_grad(Tensor());
    out = forward();
    if (!grad.defined()) grad = random_f32(out.shape(), 99, false);
    const auto start = std::chrono::steady_clock::now();
    dcae::autograd::backward(out, grad);
    if (r > 0)  // the first is a warm-up
      times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  report(name, "backward", times[times.size() / 2], backward_flops);
}

void bench_gemm(int64_t m, int64_t n, int64_t k, int repeats) {
  const Tensor a = random_f32({m, k}, 1, true), b = random_f32({k, n}, 2, true);
  const double flops = 2.0 * m * n * k;
  char name[64];
  std::snprintf(name, sizeof(name), "GEMM %lldx%lldx%lld", static_cast<long long>(m), static_cast<long long>(n),
                static_cast<long long>(k));
  // Backward: two GEMMs of the same size (dA = G B^T, dB = A^T G).
  bench(name, {a, b}, [&] { return dcae::ops::matmul(a, b); }, flops, 2 * flops, repeats);
}

void bench_conv(const char* name, int64_t batch, int64_t size, int64_t cin, int64_t cout, int64_t kernel,
                int64_t groups, int repeats) {
  const dcae::ops::Conv2dParams params{1, kernel / 2, groups};
  const Tensor x = random_f32({batch, size, size, cin}, 3, true);
  const Tensor w = random_f32({cout, cin / groups, kernel, kernel}, 4, true);
  const Tensor bias = random_f32({cout}, 5, true);
  const double flops = 2.0 * batch * size * size * cout * (cin / groups) * kernel * kernel;
  // Backward: input gradient + weight gradient, each as many FLOPs as the forward (bias gradient not counted).
  bench(name, {x, w, bias}, [&] { return dcae::ops::conv2d(x, w, bias, params); }, flops, 2 * flops, repeats);
}

}  // namespace

int main() {
  std::printf("dcae CPU ops, f32, %d OpenMP threads\n\n", omp_get_max_threads());
  std::printf("| %-34s | %-8s | %9s | %8s |\n", "op", "pass", "ms", "GFLOP/s");
  std::printf("|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(10, '-').c_str(),
              std::string(11, '-').c_str(), std::string(10, '-').c_str());
  bench_gemm(1024, 1024, 1024, 5);
  bench_conv("conv 3x3 128->128, 2x64x64", 2, 64, 128, 128, 3, 1, 5);
  bench_conv("conv 1x1 128->512, 2x64x64", 2, 64, 128, 512, 1, 1, 5);
  bench_conv("conv dw 3x3 512, 2x32x32", 2, 32, 512, 512, 3, 512, 5);
  return 0;
}
