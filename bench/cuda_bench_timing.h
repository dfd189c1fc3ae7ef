// Shared by the CUDA op benchmarks: random device tensors, event timing (warm-up, then the median of >= 20 runs)
// and the result table, in the format bench/torch_ops_peer.py prints for PyTorch so the two compare line by line.
#pragma once
#ifdef DCAE_WITH_CUDA
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor/cuda/stream.h"
#include "core/tensor/philox.h"
#include "core/tensor/tensor.h"

namespace dcae::bench {

// H200 limits measured with PyTorch (shared/bench/pytorch-baseline.md): dense bf16 matrix rate and memory copy.
constexpr double kPeakTflops = 790.0;
constexpr double kPeakGBps = 4300.0;

inline Tensor random_device(const Shape& shape, DType dtype, uint64_t seed) {
  Tensor t = empty(shape, dtype, Device::cuda(0));
  Generator gen(seed);
  normal_(t, 0.0, 1.0, gen);
  return t;
}

// Median milliseconds of fn over `reps` runs, each bracketed by CUDA events on the current stream, after
// `warmup` untimed runs (the first of which picks and caches algorithms).
// bf16 by default, with the seed first: the form the norm/attention/GLU benches use.
inline Tensor gpu_randn(const Shape& shape, uint64_t seed, DType dtype = DType::bf16) {
  return random_device(shape, dtype, seed);
}

inline double median_ms(const std::function<void()>& fn, int warmup = 5, int reps = 25) {
  const cuda::Stream stream = cuda::current_stream(0);
  for (int i = 0; i < warmup; ++i) fn();
  stream.synchronize();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    cuda::Event start(true), stop(true);
    start.record(stream);
    fn();
    stop.record(stream);
    stop.synchronize();
    times.push_back(start.elapsed_ms(stop));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

inline void print_header() {
  std::printf("| %-18s | %-44s | %9s | %8s | %8s | %8s | %-18s |\n", "op", "shape", "ms", "TFLOP/s", "GB/s",
              "% limit", "impl");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(20, '-').c_str(), std::string(46, '-').c_str(),
              std::string(11, '-').c_str(), std::string(10, '-').c_str(), std::string(10, '-').c_str(),
              std::string(10, '-').c_str(), std::string(20, '-').c_str());
}

// One row: the rates from `flops` and the bytes that must move at least once; "% limit" is the larger of the
// two fractions of the hardware limits (whichever bounds the op).
inline void print_row(const std::string& op, const std::string& shape, double ms, double flops, double bytes,
                      const std::string& impl) {
  const double tflops = flops / (ms * 1e-3) / 1e12, gbps = bytes / (ms * 1e-3) / 1e9;
  const double percent = 100.0 * std::max(tflops / kPeakTflops, gbps / kPeakGBps);
  std::printf("| %-18s | %-44s | %9.4f | %8.1f | %8.1f | %7.1f%% | %-18s |\n", op.c_str(), shape.c_str(), ms, tflops,
              gbps, percent, impl.c_str());
  std::fflush(stdout);
}

// The row without an implementation note (norm/attention benches).
inline void print_row(const std::string& op, const std::string& shape, double ms, double flops, double bytes) {
  print_row(op, shape, ms, flops, bytes, "dcae");
}

}  // namespace dcae::bench
#endif
