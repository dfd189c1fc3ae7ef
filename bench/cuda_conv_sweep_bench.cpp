// Times every cuDNN engine configuration for the 3x3 512-channel convolution backward passes (bf16, NHWC, batch 8,
// 128^2 and 64^2) and names the kernels each launched (CUPTI), to find the configuration that runs the kernel
// PyTorch's cudnn.benchmark picks (bench/torch_conv_kernels.py prints those). Configurations come from
// ops::cuda::cudnn_conv_engine_sweep: all heuristic modes, every engine index with default knobs, knob variants.
//   cuda_conv_sweep_bench [--top N] [--variants N] [--compile-seconds S] [--every-engine 1] [--seconds S]
// (--seconds: timing stops after S seconds per problem; the rest is counted as skipped)
// Prints, per problem, the N fastest configurations (ms, TFLOP/s, accepted by our numerics filter, kernels, JSON)
// and the configuration our autotuner picks (ops::cuda::conv2d_backward_*), timed the same way.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/cuda_bench_timing.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/conv2d.h"
#include "ops/cuda/cudnn_conv.h"
#endif
#ifdef DCAE_WITH_CUPTI
#include <cupti.h>
#include <cxxabi.h>
#endif

#if defined(DCAE_WITH_CUDA) && defined(DCAE_WITH_CUPTI)
namespace {

// Kernel names CUPTI recorded since the last take(), in launch order.
class KernelNames {
 public:
  static KernelNames& instance() {
    static KernelNames names;
    return names;
  }
  void start() {
    cuptiActivityRegisterCallbacks(&requested, &completed);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  }
  // Waits for the device, flushes CUPTI's buffers and returns what they held.
  std::string take() {
    cudaDeviceSynchronize();
    cuptiActivityFlushAll(1);
    std::string joined;
    for (const std::string& name : names_) joined += (joined.empty() ? "" : " + ") + name;
    names_.clear();
    return joined;
  }

 private:
  static void CUPTIAPI requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *size = size_t{4} << 20;
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
    *max_records = 0;
  }
  static void CUPTIAPI completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    CUpti_Activity* record = nullptr;
    while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS)
      if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        instance().names_.push_back(demangled(k->name));
      }
    std::free(buffer);
  }
  static std::string demangled(const char* mangled) {
    if (mangled == nullptr) return "?";
    int status = 0;
    char* text = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string name = status == 0 && text != nullptr ? text : mangled;
    std::free(text);
    const size_t paren = name.find('(');
    if (paren != std::string::npos && paren > 0) name.resize(paren);
    return name.size() > 200 ? name.substr(0, 200) : name;
  }
  std::vector<std::string> names_;
};

struct Timed {
  double ms;
  std::string kernels, config;
  bool accepted, runtime_compiled;
};

int int_flag(int argc, char** argv, const char* flag, int fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return std::atoi(argv[i + 1]);
  return fallback;
}

}  // namespace
#endif

int main(int argc, char** argv) {
#if !defined(DCAE_WITH_CUDA) || !defined(DCAE_WITH_CUPTI)
  (void)argc;
  (void)argv;
  std::printf("cuda_conv_sweep_bench: this build has no CUDA backend or no CUPTI\n");
  return 0;
#else
  using namespace dcae;
  using ops::cuda::ConvDirection;
  if (!cuda_available()) {
    std::printf("cuda_conv_sweep_bench: no CUDA GPU is visible\n");
    return 0;
  }
  const int top = int_flag(argc, argv, "--top", 12);
  const int variants = int_flag(argc, argv, "--variants", 24);
  const double compile_seconds = int_flag(argc, argv, "--compile-seconds", 8);
  const bool every_engine = int_flag(argc, argv, "--every-engine", 0) != 0;
  const double seconds = int_flag(argc, argv, "--seconds", 20);
  KernelNames& names = KernelNames::instance();
  names.start();
  const DType dtype = DType::bf16;
  for (const int64_t hw : {int64_t{128}, int64_t{64}}) {
    const int64_t n = 8, c = 512;
    const ops::cuda::ConvGeometry g{n, hw, hw, c, c, 3, 3, 1, 1, 1, hw, hw};
    const Tensor x = bench::random_device({n, hw, hw, c}, dtype, 1), w = bench::random_device({c, 3, 3, c}, dtype, 2);
    const Tensor dy = bench::random_device({n, hw, hw, c}, dtype, 4);
    const double flops = 2.0 * n * hw * hw * c * c * 9;
    for (const ConvDirection direction : {ConvDirection::backward_data, ConvDirection::backward_filter}) {
      const char* what = direction == ConvDirection::backward_data ? "bwd input" : "bwd weight";
      const auto swept = ops::cuda::cudnn_conv_engine_sweep(direction, g, dtype, {}, 0, every_engine, variants,
                                                                compile_seconds);
      std::vector<Timed> timed;
      int failed = 0, skipped = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const auto& s : swept) {
        if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds) {
          ++skipped;
          continue;
        }
        Tensor workspace;
        if (s.plan->workspace_bytes() > 0)
          workspace = empty({static_cast<int64_t>(s.plan->workspace_bytes())}, DType::u8, Device::cuda(0));
        void* ws = workspace.defined() ? workspace.raw_data() : nullptr;
        const auto run = [&] { s.plan->run(0, x.raw_data(), w.raw_data(), dy.raw_data(), ws); };
        try {
          run();
          const std::string kernels = names.take();
          const double ms = bench::median_ms(run, 2, 7);
          names.take();
          timed.push_back({ms, kernels, s.config, s.accepted, s.runtime_compiled});
        } catch (const Error&) {
          ++failed;
          names.take();
        }
      }
      std::sort(timed.begin(), timed.end(), [](const Timed& a, const Timed& b) { return a.ms < b.ms; });
      std::printf("== %s x[%lld,%lld,%lld,%lld] 3x3: %zu configurations timed, %d failed to run, %d skipped\n",
                  what, static_cast<long long>(n), static_cast<long long>(hw), static_cast<long long>(hw),
                  static_cast<long long>(c), timed.size(), failed, skipped);
      for (size_t i = 0; i < timed.size() && static_cast<int>(i) < top; ++i)
        std::printf("%8.4f ms %6.1f TFLOP/s %s%s | %s | %s\n", timed[i].ms, flops / timed[i].ms * 1e-9,
                    timed[i].accepted ? "accepted" : "FILTERED", timed[i].runtime_compiled ? " rtc" : "",
                    timed[i].kernels.c_str(), timed[i].config.c_str());
      // What the autotuner picks, timed the same way.
      const ops::Conv2dParams params{1, 1, 1};
      const Tensor w_torch = bench::random_device({c, c, 3, 3}, dtype, 2);
      const auto ours = [&] {
        if (direction == ConvDirection::backward_data)
          ops::cuda::conv2d_backward_input(dy, w_torch, x.shape(), params);
        else
          ops::cuda::conv2d_backward_weight(dy, x, w_torch.shape(), params);
      };
      ours();
      names.take();
      const double ms = bench::median_ms(ours, 2, 7);
      names.take();
      ours();
      std::printf("autotuner: %8.4f ms %6.1f TFLOP/s %s | %s\n", ms, flops / ms * 1e-9,
                  ops::cuda::last_conv_algorithm(), names.take().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
#endif
}
