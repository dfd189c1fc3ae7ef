// GPU convolution throughput (NHWC, bf16, batch 8) at the DC-AE shapes of the issue: 3x3 convolutions with 256
// and 512 channels at 128^2 and 64^2, 1x1 convolutions 512 <-> 2048 at 64^2 and a depthwise 3x3 over 4096
// channels at 16^2; forward (with bias), input gradient and weight gradient. The impl column names what the
// autotuner picked; for the 3x3 dense rows, both input-gradient paths also run forced (cuDNN's input-gradient
// engines, and the forward convolution of dy with the flipped filter), to show what the timed choice chose from.
// The same rows from PyTorch: python bench/torch_ops_peer.py conv2d
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "bench/cuda_bench_timing.h"
#include "bench/kernel_profile.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/conv2d.h"
#endif

#ifdef DCAE_WITH_CUDA
namespace {

struct ConvShape {
  int64_t n, hw, cin, cout, k, groups;
};

std::string describe(const ConvShape& c) {
  const int64_t pad = c.k / 2;
  return "x[" + std::to_string(c.n) + "," + std::to_string(c.hw) + "," + std::to_string(c.hw) + "," +
         std::to_string(c.cin) + "] w[" + std::to_string(c.cout) + "," + std::to_string(c.cin / c.groups) + "," +
         std::to_string(c.k) + "," + std::to_string(c.k) + "] p" + std::to_string(pad) + " g" +
         std::to_string(c.groups);
}

}  // namespace
#endif

int main() {
#ifndef DCAE_WITH_CUDA
  std::printf("cuda_conv2d_bench: this build has no CUDA backend (configure with -DDCAE_CUDA=ON)\n");
  return 0;
#else
  using namespace dcae;
  if (!cuda_available()) {
    std::printf("cuda_conv2d_bench: no CUDA GPU is visible\n");
    return 0;
  }
  const std::vector<ConvShape> shapes = {
      {8, 128, 256, 256, 3, 1}, {8, 64, 256, 256, 3, 1},  {8, 128, 512, 512, 3, 1},
      {8, 64, 512, 512, 3, 1},  {8, 64, 512, 2048, 1, 1}, {8, 64, 2048, 512, 1, 1},
      {8, 16, 4096, 4096, 3, 4096},
  };
  bench::print_header();
  const DType dtype = DType::bf16;
  const double element = static_cast<double>(dtype_size(dtype));
  for (const ConvShape& c : shapes) {
    const ops::Conv2dParams params{1, c.k / 2, c.groups};
    const Shape x_shape = {c.n, c.hw, c.hw, c.cin}, w_shape = {c.cout, c.cin / c.groups, c.k, c.k};
    const Tensor x = bench::random_device(x_shape, dtype, 1), w = bench::random_device(w_shape, dtype, 2);
    const Tensor bias = bench::random_device({c.cout}, dtype, 3);
    const Tensor grad = bench::random_device({c.n, c.hw, c.hw, c.cout}, dtype, 4);
    const double macs = static_cast<double>(c.n) * c.hw * c.hw * c.cout * (c.cin / c.groups) * c.k * c.k;
    const double x_bytes = static_cast<double>(x.numel()) * element, y_bytes = static_cast<double>(grad.numel()) * element;
    const double w_bytes = static_cast<double>(w.numel()) * element;
    const std::string shape = describe(c);

    double ms = bench::median_ms([&] { ops::cuda::conv2d_forward(x, w, bias, params); });
    bench::print_row("conv2d fwd+bias", shape, ms, 2 * macs, x_bytes + w_bytes + y_bytes, ops::cuda::last_conv_algorithm());
    ms = bench::median_ms([&] { ops::cuda::conv2d_backward_input(grad, w, x_shape, params); });
    bench::print_row("conv2d bwd input", shape, ms, 2 * macs, x_bytes + w_bytes + y_bytes,
                     ops::cuda::last_conv_algorithm());
    // Both input-gradient paths forced, where the flipped forward applies (the row above is the timed choice).
    if (c.k > 1 && c.groups == 1)
      for (const auto& [path, name] : {std::pair{ops::cuda::InputGradientPath::dgrad, "bwd input dgrad"},
                                       std::pair{ops::cuda::InputGradientPath::flipped_forward, "bwd input flip"}}) {
        const ops::cuda::InputGradientPath previous = ops::cuda::set_input_gradient_path(path);
        ms = bench::median_ms([&] { ops::cuda::conv2d_backward_input(grad, w, x_shape, params); });
        bench::print_row(std::string("conv2d ") + name, shape, ms, 2 * macs, x_bytes + w_bytes + y_bytes,
                         ops::cuda::last_conv_algorithm());
        ops::cuda::set_input_gradient_path(previous);
      }
    ms = bench::median_ms([&] { ops::cuda::conv2d_backward_weight(grad, x, w_shape, params); });
    bench::print_row("conv2d bwd weight", shape, ms, 2 * macs, x_bytes + w_bytes + y_bytes,
                     ops::cuda::last_conv_algorithm());
    // What each dense 3x3 call above pays to change the filter between our KCRS and cuDNN's KRSC (the weight
    // gradient changes its result back): one read and one write of the filter.
    // The row's time includes the host's work per call (view, layout, allocation); with CUPTI the impl column
    // also gives the kernel's own GPU time.
    if (c.k > 1 && c.groups == 1) {
      const auto permute = [&] { w.permute({0, 2, 3, 1}).contiguous(); };
      ms = bench::median_ms(permute);
      std::string impl = "tiled transpose";
#ifdef DCAE_WITH_CUPTI
      bench::KernelProfile& profile = bench::KernelProfile::instance();
      profile.clear();
      profile.start();
      for (int rep = 0; rep < 25; ++rep) permute();
      cuda::current_stream(0).synchronize();
      profile.stop();
      double kernel_us = 0;
      int64_t launches = 0;
      for (const auto& [name, totals] : profile.totals()) kernel_us += totals.total_us, launches += totals.count;
      char text[96];
      std::snprintf(text, sizeof text, ", kernel %.1f us (%.0f GB/s)", kernel_us / 25, 2 * w_bytes / (kernel_us / 25) / 1e3);
      impl += text;
      if (launches != 25) impl += " [" + std::to_string(launches) + " launches]";
#endif
      bench::print_row("filter KCRS->KRSC", shape, ms, 0, 2 * w_bytes, impl);
    }
  }
  return 0;
#endif
}
