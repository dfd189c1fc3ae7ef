#include "ops/cuda/conv2d.h"
#include "ops/cuda/bias_activation.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor/cuda/stream.h"
#include "ops/cuda/conv2d_direct.h"
#include "ops/cuda/conv2d_flip.h"
#include "ops/cuda/conv2d_geometry.h"
#include "ops/cuda/cudnn_conv.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/math_mode.h"
#include "ops/cuda/plan_key.h"

namespace dcae::ops::cuda {

namespace {

// cuDNN plans timed per problem when autotuning (modes A then B of its heuristic, best first).
constexpr int kMaxTimedPlans = 16;

std::atomic<ConvBackend> g_backend{ConvBackend::automatic};
std::atomic<InputGradientPath> g_input_gradient_path{InputGradientPath::automatic};
thread_local std::string t_last_algorithm = "none";

ConvGeometry geometry(const Shape& x, const Shape& weight, const Conv2dParams& p) {
  ConvGeometry g{x[0], x[1], x[2], x[3], weight[0], weight[2], weight[3], p.stride, p.padding, p.groups, 0, 0};
  g.ho = conv2d_output_size(g.h, g.kh, g.stride, g.pad);
  g.wo = conv2d_output_size(g.w, g.kw, g.stride, g.pad);
  return g;
}

std::string describe(ConvDirection direction, const ConvGeometry& g, DType dtype) {
  std::ostringstream out;
  out << (direction == ConvDirection::forward         ? "forward"
          : direction == ConvDirection::backward_data ? "input gradient"
                                                      : "weight gradient")
      << " of input " << shape_str({g.n, g.h, g.w, g.cin}) << " " << dtype << " with weight "
      << shape_str({g.cout, g.cin_g(), g.kh, g.kw}) << ", stride " << g.stride << ", padding " << g.pad
      << ", groups " << g.groups;
  return out.str();
}

// Alignment of a buffer in bytes, up to 16 (what cuDNN's vectorised engines care about).
int64_t alignment_of(const void* ptr) { return pointer_alignment(ptr, 16); }

// PyTorch layout [Cout, Cin/g, kh, kw] -> KRSC [Cout, kh, kw, Cin/g] (a copy only when the two differ).
Tensor filter_krsc(const Tensor& weight, const ConvGeometry& g) {
  return g.filter_is_krsc() ? weight.contiguous() : weight.permute({0, 2, 3, 1}).contiguous();
}

// How a problem runs: a cuDNN plan, or the direct kernels when `plan` is null.
struct Choice {
  std::shared_ptr<const CudnnConvPlan> plan;
};

using ChoiceKey = PlanKey<20>;
using ChoiceKeyHash = PlanKeyHash<20>;

// Everything a choice depends on; `kind` is a ConvDirection, or kForwardWithBias (+ a BiasActivation for the
// forward with bias and activation).
constexpr int kForwardWithBias = 3;
ChoiceKey key_for(int kind, const ConvGeometry& g, DType dtype, int device, const ConvAlignment& alignment) {
  return ChoiceKey{{kind, static_cast<int64_t>(dtype), g.n, g.h, g.w, g.cin, g.cout, g.kh, g.kw, g.stride, g.pad,
                    g.groups, alignment.x, alignment.w, alignment.y, alignment.bias,
                    static_cast<int64_t>(g_backend.load()), conv_autotune(), allow_tf32(), device}};
}

// x, w (KRSC) and y of the problem; the direction decides which one is written.
struct Buffers {
  void* x;
  void* w;
  void* y;
};

// Runs a cuDNN plan with its workspace from the caching allocator (`bias` only for fused conv+bias plans).
void run_plan(const CudnnConvPlan& plan, int device, const Buffers& b, const void* bias = nullptr) {
  Tensor workspace;
  if (plan.workspace_bytes() > 0)
    workspace = empty({static_cast<int64_t>(plan.workspace_bytes())}, DType::u8, Device::cuda(device));
  plan.run(device, b.x, b.w, b.y, workspace.defined() ? workspace.raw_data() : nullptr, bias);
}

void run_choice(const Choice& choice, ConvDirection direction, const ConvGeometry& g, DType dtype, int device,
                const Buffers& b) {
  if (choice.plan) return run_plan(*choice.plan, device, b);
  switch (direction) {
    case ConvDirection::forward: return direct_conv2d_forward(g, dtype, device, b.x, b.w, b.y);
    case ConvDirection::backward_data: return direct_conv2d_backward_data(g, dtype, device, b.y, b.w, b.x);
    case ConvDirection::backward_filter: return direct_conv2d_backward_filter(g, dtype, device, b.x, b.y, b.w);
  }
}

// Milliseconds of one run (best of three after a warm-up), or infinity when it fails (an engine that cannot run
// after all, a workspace that does not fit).
double time_ms(int device, const std::function<void()>& run) {
  try {
    run();
    const ::dcae::cuda::Stream stream = ::dcae::cuda::current_stream(device);
    double best = std::numeric_limits<double>::infinity();
    for (int rep = 0; rep < 3; ++rep) {
      ::dcae::cuda::Event start(true), stop(true);
      start.record(stream);
      run();
      stop.record(stream);
      stop.synchronize();
      best = std::min<double>(best, start.elapsed_ms(stop));
    }
    return best;
  } catch (const Error&) {
    return std::numeric_limits<double>::infinity();
  }
}

// Problems of at least this many multiply-adds (the 3x3 convolutions of 256 channels and more at 64^2 and up,
// batch 8: 0.07 ms and more) also get the knob search below; smaller ones keep the heuristic's candidates.
constexpr int64_t kKnobSearchMacs = int64_t{1} << 34;
// Rounds of the knob search and the variants timed per round: at most 3 x 48 extra timings on the first call of
// a large problem (about half a second for the 3x3 512-channel input gradient at 128^2, batch 8).
constexpr int kKnobSearchRounds = 3, kKnobVariantsPerRound = 48;

// Local search from the fastest cuDNN plan: time its one-knob neighbours, move to the fastest if it beats the
// plan, repeat. It reaches configurations two or three knob changes away from the heuristic's answers: for the
// 3x3 512-channel input gradient PyTorch's cudnn.benchmark runs engine 67 with tile size 3 and a 2x1 cluster where
// the heuristic's first answer has tile size 0 and an 8x1 cluster (bench/results/h200_ops_vs_torch.md).
// DCAE_CONV_KNOB_SEARCH=0 turns it off (the heuristic's candidates alone are timed).
template <typename TryCandidate>
void knob_search(DType dtype, int device, const Choice& chosen, const TryCandidate& try_candidate) {
  static const bool enabled = [] {
    const char* value = std::getenv("DCAE_CONV_KNOB_SEARCH");
    return value == nullptr || std::string(value) != "0";
  }();
  if (!enabled) return;
  for (int round = 0; round < kKnobSearchRounds; ++round) {
    const std::shared_ptr<const CudnnConvPlan> from = chosen.plan;
    for (auto& plan : cudnn_conv_knob_neighbours(*from, dtype, device, kKnobVariantsPerRound)) try_candidate({plan});
    if (chosen.plan == from) return;  // no neighbour was faster
  }
}

// The cached choice for this problem, found on first use (candidates run on the call's own buffers).
Choice choose(ConvDirection direction, const ConvGeometry& g, DType dtype, int device, const Buffers& b) {
  const ConvBackend backend = g_backend.load();
  const bool autotune = conv_autotune();
  const ConvAlignment alignment{alignment_of(b.x), alignment_of(b.w), alignment_of(b.y)};
  const ChoiceKey key = key_for(static_cast<int>(direction), g, dtype, device, alignment);
  thread_local std::unordered_map<ChoiceKey, Choice, ChoiceKeyHash> cache;
  if (const auto it = cache.find(key); it != cache.end()) return it->second;

  std::vector<Choice> candidates;
  if (backend != ConvBackend::direct_only)
    for (auto& plan : cudnn_conv_plans(direction, g, dtype, alignment, device, autotune ? kMaxTimedPlans : 1))
      candidates.push_back({plan});
  DCAE_CHECK(backend != ConvBackend::cudnn_only || !candidates.empty(), "conv2d: cuDNN has no engine for the ",
             describe(direction, g, dtype));
  // Our kernels compete where cuDNN has nothing, and for depthwise convolutions, where they are often faster.
  if (backend == ConvBackend::direct_only ||
      (backend == ConvBackend::automatic && (candidates.empty() || g.depthwise())))
    candidates.push_back({nullptr});
  Choice chosen = candidates.front();
  if (autotune && candidates.size() > 1) {
    // DCAE_CONV_TUNE_LOG=1 prints every candidate's time to stderr: a diagnostic for tuning work.
    static const bool log = std::getenv("DCAE_CONV_TUNE_LOG") != nullptr;
    double best = std::numeric_limits<double>::infinity();
    const auto try_candidate = [&](const Choice& candidate) {
      const double ms = time_ms(device, [&] { run_choice(candidate, direction, g, dtype, device, b); });
      if (log)
        std::fprintf(stderr, "conv tune: %s: %s (workspace %zu): %.4f ms\n", describe(direction, g, dtype).c_str(),
                     candidate.plan ? candidate.plan->description().c_str() : "direct",
                     candidate.plan ? candidate.plan->workspace_bytes() : size_t{0}, ms);
      if (ms < best) best = ms, chosen = candidate;
    };
    for (const Choice& candidate : candidates) try_candidate(candidate);
    if (chosen.plan && g.n * g.ho * g.wo * g.cout_g() * g.cin_g() * g.kh * g.kw * g.groups >= kKnobSearchMacs)
      knob_search(dtype, device, chosen, try_candidate);
  }
  return cache.emplace(key, chosen).first->second;
}

void run_problem(ConvDirection direction, const ConvGeometry& g, DType dtype, int device, const Buffers& b) {
  const Choice choice = choose(direction, g, dtype, device, b);
  run_choice(choice, direction, g, dtype, device, b);
  t_last_algorithm = choice.plan ? "cudnn engine " + std::to_string(choice.plan->engine_id()) : "direct";
}

// Forward with a bias: a cuDNN plan with the bias fused into its epilogue, or (null) the plain forward choice and
// then a separate pass adding the bias - whichever runs faster, found on first use like the other choices.
std::shared_ptr<const CudnnConvPlan> choose_fused_bias(const ConvGeometry& g, DType dtype, int device,
                                                       const Buffers& b, const Tensor& y, const Tensor& bias) {
  const ConvBackend backend = g_backend.load();
  const bool autotune = conv_autotune();
  const ConvAlignment alignment{alignment_of(b.x), alignment_of(b.w), alignment_of(b.y), alignment_of(bias.raw_data())};
  const ChoiceKey key = key_for(kForwardWithBias, g, dtype, device, alignment);
  thread_local std::unordered_map<ChoiceKey, std::shared_ptr<const CudnnConvPlan>, ChoiceKeyHash> cache;
  if (const auto it = cache.find(key); it != cache.end()) return it->second;

  std::vector<std::shared_ptr<const CudnnConvPlan>> fused;
  if (backend != ConvBackend::direct_only)
    fused = cudnn_conv_bias_plans(g, dtype, alignment, device, autotune ? kMaxTimedPlans : 1);
  std::shared_ptr<const CudnnConvPlan> chosen = fused.empty() ? nullptr : fused.front();
  if (autotune && !fused.empty()) {
    double best = time_ms(device, [&] {
      run_problem(ConvDirection::forward, g, dtype, device, b);
      add_bias_activation_(y, bias, BiasActivation::none);
    });
    chosen = nullptr;
    for (const auto& plan : fused) {
      const double ms = time_ms(device, [&] { run_plan(*plan, device, b, bias.raw_data()); });
      if (ms < best) best = ms, chosen = plan;
    }
  }
  return cache.emplace(key, chosen).first->second;
}

// Forward with bias and activation: the fastest cuDNN plan with both fused into its epilogue, or null when none
// exists or none beats the forward without bias followed by one bias+activation pass (what the caller then runs).
std::shared_ptr<const CudnnConvPlan> choose_fused_activation(const ConvGeometry& g, DType dtype, int device,
                                                             const Buffers& b, const Tensor& y, const Tensor& bias,
                                                             BiasActivation act) {
  const ConvAlignment alignment{alignment_of(b.x), alignment_of(b.w), alignment_of(b.y), alignment_of(bias.raw_data())};
  const ChoiceKey key = key_for(kForwardWithBias + static_cast<int>(act), g, dtype, device, alignment);
  thread_local std::unordered_map<ChoiceKey, std::shared_ptr<const CudnnConvPlan>, ChoiceKeyHash> cache;
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  std::shared_ptr<const CudnnConvPlan> chosen;
  if (g_backend.load() == ConvBackend::automatic && conv_autotune()) {
    const ConvEpilogue epilogue = act == BiasActivation::relu ? ConvEpilogue::bias_relu : ConvEpilogue::bias_silu;
    const auto fused = cudnn_conv_bias_plans(g, dtype, alignment, device, kMaxTimedPlans, epilogue);
    if (!fused.empty()) {
      double best = time_ms(device, [&] {
        run_problem(ConvDirection::forward, g, dtype, device, b);
        add_bias_activation_(y, bias, act);
      });
      for (const auto& plan : fused) {
        const double ms = time_ms(device, [&] { run_plan(*plan, device, b, bias.raw_data()); });
        if (ms < best) best = ms, chosen = plan;
      }
    }
  }
  return cache.emplace(key, chosen).first->second;
}

// The input gradient as a forward convolution (see InputGradientPath): stride 1 and one group, so that dy
// convolved with the flipped, transposed filter is dx; a square kernel and padding below it, so that the new
// padding kh - 1 - pad is one non-negative number.
bool flipped_forward_applies(const ConvGeometry& g) {
  return g.stride == 1 && g.groups == 1 && g.kh == g.kw && g.pad <= g.kh - 1 && g_backend.load() != ConvBackend::direct_only;
}

// dx [N, H, W, Cin] = forward convolution of dy [N, Ho, Wo, Cout] with w' [Cin, kh, kw, Cout], padding kh-1-pad.
void run_flipped_forward(const ConvGeometry& g, DType dtype, int device, const Tensor& grad, const Tensor& weight,
                         const Tensor& dx) {
  const ConvGeometry flipped{g.n, g.ho, g.wo, g.cout, g.cin, g.kh, g.kw, 1, g.kh - 1 - g.pad, 1, g.h, g.w};
  const Tensor w = flipped_transposed_filter(weight.contiguous());
  run_problem(ConvDirection::forward, flipped, dtype, device, {grad.raw_data(), w.raw_data(), dx.raw_data()});
  t_last_algorithm = "flipped forward, " + t_last_algorithm;
}

// Whether this input gradient runs as the flipped forward: the setting, or under `automatic` the faster of the
// two (each timed with its filter transform, which every call pays), decided on first use per problem. Only
// decides: the caller then runs the path chosen.
bool use_flipped_forward(const ConvGeometry& g, DType dtype, int device, const Tensor& grad, const Tensor& dx,
                         const std::function<void()>& as_dgrad, const std::function<void()>& as_forward) {
  const InputGradientPath path = g_input_gradient_path.load();
  if (path != InputGradientPath::automatic) return path == InputGradientPath::flipped_forward;
  if (!conv_autotune()) return false;
  constexpr int kInputGradientPathKind = 10;  // apart from the directions and the fused forward kinds
  const ConvAlignment alignment{alignment_of(dx.raw_data()), 16, alignment_of(grad.raw_data())};
  const ChoiceKey key = key_for(kInputGradientPathKind, g, dtype, device, alignment);
  thread_local std::unordered_map<ChoiceKey, bool, ChoiceKeyHash> cache;
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  const double dgrad_ms = time_ms(device, as_dgrad), forward_ms = time_ms(device, as_forward);
  if (std::getenv("DCAE_CONV_TUNE_LOG") != nullptr)
    std::fprintf(stderr, "conv tune: %s: dgrad %.4f ms, flipped forward %.4f ms\n",
                 describe(ConvDirection::backward_data, g, dtype).c_str(), dgrad_ms, forward_ms);
  return cache.emplace(key, forward_ms < dgrad_ms).first->second;
}

}  // namespace

InputGradientPath set_input_gradient_path(InputGradientPath path) { return g_input_gradient_path.exchange(path); }

Tensor conv2d_forward_bias_activation(const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                                      const Conv2dParams& params, ConvActivation act) {
  const ConvGeometry g = geometry(x_in.shape(), weight.shape(), params);
  if (!bias.defined()) return Tensor();
  const BiasActivation op = act == ConvActivation::relu ? BiasActivation::relu : BiasActivation::silu;
  if (g.pointwise()) {  // the GEMM path: no activation epilogue for SiLU there, so one pass after it
    Tensor y = conv2d_forward(x_in, weight, Tensor(), params);
    add_bias_activation_(y, bias.contiguous(), op);
    return y;
  }
  const int device = x_in.device().index;
  const DType dtype = x_in.dtype();
  ::dcae::cuda::DeviceGuard guard(device);
  const Tensor x = x_in.contiguous();
  Tensor y = empty({g.n, g.ho, g.wo, g.cout}, dtype, x.device());
  if (y.numel() == 0) return y;
  const Tensor w = filter_krsc(weight, g);
  const Tensor b = bias.contiguous();
  const Buffers buffers{x.raw_data(), w.raw_data(), y.raw_data()};
  const std::shared_ptr<const CudnnConvPlan> plan = choose_fused_activation(g, dtype, device, buffers, y, b, op);
  if (plan) {
    run_plan(*plan, device, buffers, b.raw_data());
    t_last_algorithm = "cudnn engine " + std::to_string(plan->engine_id()) + " +bias+activation";
  } else {
    run_problem(ConvDirection::forward, g, dtype, device, buffers);
    add_bias_activation_(y, b, op);
    t_last_algorithm += " then bias+activation";
  }
  return y;
}

ConvBackend set_conv_backend(ConvBackend backend) { return g_backend.exchange(backend); }

const char* last_conv_algorithm() { return t_last_algorithm.c_str(); }

Tensor conv2d_forward(const Tensor& x_in, const Tensor& weight, const Tensor& bias, const Conv2dParams& params) {
  const ConvGeometry g = geometry(x_in.shape(), weight.shape(), params);
  const int device = x_in.device().index;
  const DType dtype = x_in.dtype();
  ::dcae::cuda::DeviceGuard guard(device);
  const Tensor x = x_in.contiguous();
  Tensor y = empty({g.n, g.ho, g.wo, g.cout}, dtype, x.device());
  if (y.numel() == 0) return y;
  bool bias_done = false;
  if (g.pointwise()) {
    // y [pixels, Cout] = x [pixels, Cin] @ w[Cout, Cin]^T, one batch entry per group.
    const Tensor w = weight.contiguous();
    const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
    bias_done = gemm(dtype, device, g.n * g.h * g.w, g.cout_g(), g.cin_g(), g.groups, {x.raw_data(), g.cin, g.cin_g()},
                     {w.raw_data(), g.cin_g(), g.cout_g() * g.cin_g(), true}, {y.raw_data(), g.cout, g.cout_g()},
                     b.defined() ? b.raw_data() : nullptr, g.cout_g());
    t_last_algorithm = "gemm";
  } else {
    const Tensor w = filter_krsc(weight, g);
    const Buffers buffers{x.raw_data(), w.raw_data(), y.raw_data()};
    const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
    const std::shared_ptr<const CudnnConvPlan> fused =
        b.defined() ? choose_fused_bias(g, dtype, device, buffers, y, b) : nullptr;
    if (fused) {
      run_plan(*fused, device, buffers, b.raw_data());
      t_last_algorithm = "cudnn engine " + std::to_string(fused->engine_id()) + " +bias";
      return y;
    }
    run_problem(ConvDirection::forward, g, dtype, device, buffers);
  }
  if (bias.defined() && !bias_done) add_bias_activation_(y, bias, BiasActivation::none);
  return y;
}

Tensor conv2d_backward_input(const Tensor& grad_in, const Tensor& weight, const Shape& x_shape,
                             const Conv2dParams& params) {
  const ConvGeometry g = geometry(x_shape, weight.shape(), params);
  const int device = grad_in.device().index;
  const DType dtype = grad_in.dtype();
  ::dcae::cuda::DeviceGuard guard(device);
  const Tensor grad = grad_in.contiguous();
  Tensor dx = empty(x_shape, dtype, grad.device());
  if (dx.numel() == 0) return dx;
  if (g.pointwise()) {
    // dx [pixels, Cin] = grad [pixels, Cout] @ w [Cout, Cin], per group.
    const Tensor w = weight.contiguous();
    gemm(dtype, device, g.n * g.h * g.w, g.cin_g(), g.cout_g(), g.groups, {grad.raw_data(), g.cout, g.cout_g()},
         {w.raw_data(), g.cin_g(), g.cout_g() * g.cin_g()}, {dx.raw_data(), g.cin, g.cin_g()});
    t_last_algorithm = "gemm";
    return dx;
  }
  const auto as_dgrad = [&] {
    const Tensor w = filter_krsc(weight, g);
    run_problem(ConvDirection::backward_data, g, dtype, device, {dx.raw_data(), w.raw_data(), grad.raw_data()});
  };
  const auto as_forward = [&] { run_flipped_forward(g, dtype, device, grad, weight, dx); };
  if (flipped_forward_applies(g) && use_flipped_forward(g, dtype, device, grad, dx, as_dgrad, as_forward))
    as_forward();
  else
    as_dgrad();
  return dx;
}

Tensor conv2d_backward_weight(const Tensor& grad_in, const Tensor& x_in, const Shape& weight_shape,
                              const Conv2dParams& params) {
  const ConvGeometry g = geometry(x_in.shape(), weight_shape, params);
  const int device = grad_in.device().index;
  const DType dtype = grad_in.dtype();
  ::dcae::cuda::DeviceGuard guard(device);
  const Tensor grad = grad_in.contiguous(), x = x_in.contiguous();
  if (g.pointwise()) {
    // dw [Cout, Cin] = grad^T [Cout, pixels] @ x [pixels, Cin], per group (no pixels: zeros).
    Tensor dw = empty(weight_shape, dtype, grad.device());
    gemm(dtype, device, g.cout_g(), g.cin_g(), g.n * g.h * g.w, g.groups, {grad.raw_data(), g.cout, g.cout_g(), true},
         {x.raw_data(), g.cin, g.cin_g()}, {dw.raw_data(), g.cin_g(), g.cout_g() * g.cin_g()});
    t_last_algorithm = "gemm";
    return dw;
  }
  if (g.n == 0) return zeros(weight_shape, dtype, grad.device());
  Tensor dw = empty({g.cout, g.kh, g.kw, g.cin_g()}, dtype, grad.device());
  run_problem(ConvDirection::backward_filter, g, dtype, device, {x.raw_data(), dw.raw_data(), grad.raw_data()});
  return g.filter_is_krsc() ? dw.view(weight_shape) : dw.permute({0, 3, 1, 2}).contiguous();
}

}  // namespace dcae::ops::cuda
