// Timing and the result table shared by the CUDA op benchmarks (bench/cuda_*_bench.cpp). bench/torch_ops_peer.py
// prints the same table for PyTorch at the same shapes, so the two can be read side by side.
//
//   | impl | op | shape | ms | TFLOP/s | GB/s | % of limit |
//
// ms is the median of `reps` timed runs after `warmup` untimed ones, each run bracketed by CUDA events on the
// current stream. "% of limit" is the larger of TFLOP/s / 790 (H200 dense bf16) and GB/s / 4300 (H200 copy).
#pragma once
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor/cuda/stream.h"

namespace dcae::bench {

constexpr double kPeakTflops = 790.0;  // H200 dense bf16, measured (shared/bench/pytorch-baseline.md)
constexpr double kPeakGbps = 4300.0;   // H200 device memory copy

inline double median_ms(const std::function<void()>& fn, int warmup = 5, int reps = 25) {
  const cuda::Stream stream = cuda::current_stream(cuda::current_device());
  for (int i = 0; i < warmup; ++i) fn();
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
  std::printf("| impl | op | shape | ms | TFLOP/s | GB/s | %% of limit |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
}

// flops and bytes: the work and the minimum memory traffic of one run.
inline void print_row(const std::string& op, const std::string& shape, double ms, double flops, double bytes) {
  const double tflops = flops / (ms * 1e9), gbps = bytes / (ms * 1e6);
  const double fraction = std::max(tflops / kPeakTflops, gbps / kPeakGbps);
  std::printf("| dcae | %s | %s | %.4f | %.1f | %.0f | %.1f |\n", op.c_str(), shape.c_str(), ms, tflops, gbps,
              100.0 * fraction);
  std::fflush(stdout);
}

}  // namespace dcae::bench
