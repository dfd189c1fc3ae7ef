// Convolutions through cuDNN 9's graph (backend) API: NHWC activations, KRSC filters, fp32 accumulation.
//
// cudnn_conv_plans builds the one-operation graph of a problem, asks cuDNN's heuristics for engine
// configurations (mode A alone for a single plan; modes A, B and instant merged when several are wanted for
// timing, falling back to the fallback mode when none has any), drops those whose numerics we do not accept
// (TF32 on f32 unless allowed, inputs converted down, reduced-precision reductions, FFT; Winograd in f32/f64) and
// finalizes the rest into execution plans. The caller (ops/cuda/conv2d.cpp) times them and caches its choice.
// Settings read from the environment, for tuning experiments (see bench/results/h200_ops_vs_torch.md):
//   DCAE_CUDNN_KNOB_SEARCH=1           also knob variants of the first two configurations (cudnn_conv_knobs.h)
//   DCAE_CUDNN_REDUCED_REDUCTION=1     accept reduced-precision reductions for bf16/f16 (PyTorch does)
//   DCAE_CUDNN_MAX_RUNTIME_COMPILED=N  runtime-compiled engines per problem (default 1: each costs a compilation)
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"
#include "ops/cuda/conv2d_geometry.h"

namespace dcae::ops::cuda {

class CudnnConvPlan {
 public:
  virtual ~CudnnConvPlan() = default;
  virtual size_t workspace_bytes() const = 0;
  // Runs on the current stream of `device`. x [N, H, W, Cin], w [Cout, kh, kw, Cin/g] and y [N, Ho, Wo, Cout] are
  // contiguous buffers of the plan's dtype; the direction decides which one is written (y, x or w). `bias`
  // [Cout] is given exactly to plans from cudnn_conv_bias_plans.
  virtual void run(int device, void* x, void* w, void* y, void* workspace, const void* bias = nullptr) const = 0;
  // cuDNN's engine index, for messages and benchmarks.
  virtual int64_t engine_id() const = 0;
  // The engine and its knob settings (cuDNN's plan JSON where it gives one), for logs and benchmarks.
  virtual const std::string& description() const = 0;
};

// Alignment in bytes (1..16) of the buffers the plans will see.
struct ConvAlignment {
  int64_t x = 16, w = 16, y = 16, bias = 16;
};

// Up to `max_plans` finalized plans, in cuDNN's order of preference; empty when cuDNN supports none.
std::vector<std::shared_ptr<const CudnnConvPlan>> cudnn_conv_plans(ConvDirection direction, const ConvGeometry& g,
                                                                   DType dtype, const ConvAlignment& alignment,
                                                                   int device, int max_plans);

// Plans of `plan`'s engine (one from cudnn_conv_plans) with one knob at a time moved to another legal value, the
// others as `plan` sets them (up to `max_plans`; runtime-compiled engines and numerics we do not accept give none).
// The autotuner in ops/cuda/conv2d.cpp walks these from its fastest heuristic plan: a tile-size change and a
// cluster-shape change together (what PyTorch's cudnn.benchmark found for 3x3 512-channel dgrad) are two steps.
std::vector<std::shared_ptr<const CudnnConvPlan>> cudnn_conv_knob_neighbours(const CudnnConvPlan& plan, DType dtype,
                                                                             int device, int max_plans);

// What a fused forward plan applies to the convolution's fp32 result before rounding it into y.
enum class ConvEpilogue { bias, bias_relu, bias_silu };

// Plans for the forward convolution with + bias[Cout] (and optionally an activation) fused into its epilogue (one
// pass over y instead of two or three), where cuDNN has such an engine for the problem; empty otherwise.
std::vector<std::shared_ptr<const CudnnConvPlan>> cudnn_conv_bias_plans(const ConvGeometry& g, DType dtype,
                                                                        const ConvAlignment& alignment, int device,
                                                                        int max_plans,
                                                                        ConvEpilogue epilogue = ConvEpilogue::bias);

// Every engine configuration cuDNN has for one problem, to learn which kernels it can run and how fast
// (bench/cuda_conv_sweep_bench.cpp): the configurations of all heuristic modes (A, B, instant, fallback), with
// `every_engine` also every engine index 0..count-1 with its default knobs, and for the first four answers of each
// mode and each engine up to `knob_variants_per_engine` variants with one knob moved. Duplicates (the same plan JSON) appear once; runtime-compiled engines are finalized only
// while `compile_seconds` of compilation time remain. `accepted` says whether our numerics filter (the one
// cudnn_conv_plans applies) lets the configuration through; `config` is the plan's JSON (engine and knobs).
struct CudnnSweptPlan {
  std::shared_ptr<const CudnnConvPlan> plan;
  std::string config;
  bool accepted = false;
  bool runtime_compiled = false;
};
std::vector<CudnnSweptPlan> cudnn_conv_engine_sweep(ConvDirection direction, const ConvGeometry& g, DType dtype,
                                                    const ConvAlignment& alignment, int device, bool every_engine,
                                                    int knob_variants_per_engine, double compile_seconds);

}  // namespace dcae::ops::cuda
