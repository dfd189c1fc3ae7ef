// The fused multi-tensor AdamW on the GPU against the CPU update (trainer/optim/update_math.h), the AdamW
// optimizer stepping GPU parameters, and its capturable mode: eager steps equal the host-scalar kernel's, steps
// captured in a CUDA graph and replayed with a changing lr and clipping equal eager ones bit for bit, and a
// non-finite gradient norm skips the step on the device. Skips without a GPU.
#include <gtest/gtest.h>

#include <limits>

#include "ops/unary.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/testing/check.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/clip.h"
#include "trainer/optim/update_math.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/cuda_graph.h"
#include "trainer/cuda/graphed_step.h"
#endif

namespace dcae::trainer {
namespace {

using dcae::testing::gpu;
using dcae::testing::gpu_matches_cpu;
using dcae::testing::random_tensor;
using dcae::testing::tolerance_for;

class CudaAdamW : public dcae::testing::CudaTest {};

struct Spec {
  Shape shape;
  DType master, grad, param;  // param f32 with an f32 master means no separate copy
  double lr, weight_decay;
  int64_t step;
};

AdamWTensors make(const Spec& s, uint64_t seed, Device device) {
  AdamWTensors t;
  t.master = random_tensor(s.shape, seed, s.master).to(device);
  t.grad = random_tensor(s.shape, seed + 1, s.grad).to(device);
  t.exp_avg = random_tensor(s.shape, seed + 2, s.master, 0.1).to(device);
  t.exp_avg_sq = ops::abs(random_tensor(s.shape, seed + 3, s.master, 0.01)).to(device);
  if (s.param != s.master) t.param = empty(s.shape, s.param, device);
  t.hyper.lr = s.lr;
  t.hyper.weight_decay = s.weight_decay;
  t.hyper.beta1 = 0.9;
  t.hyper.beta2 = 0.99;
  t.hyper.eps = 1e-8;
  t.hyper.step = s.step;
  return t;
}

TEST_F(CudaAdamW, OneLaunchOverManyTensorsMatchesTheCpuUpdate) {
  const std::vector<Spec> specs = {
      {{1000, 70}, DType::f32, DType::bf16, DType::bf16, 1e-3, 0.03, 1},  // spans two 64K chunks
      {{33}, DType::f32, DType::f32, DType::f32, 2e-3, 0.0, 7},
      {{5, 7, 3}, DType::f32, DType::f16, DType::f16, 1e-2, 0.1, 3},
      {{129}, DType::f64, DType::f64, DType::f64, 1e-3, 0.01, 2},
      {{0}, DType::f32, DType::f32, DType::bf16, 1e-3, 0.0, 1},  // empty
  };
  std::vector<AdamWTensors> on_gpu, on_cpu;
  for (size_t i = 0; i < specs.size(); ++i) {
    on_gpu.push_back(make(specs[i], 10 * i, gpu()));
    on_cpu.push_back(make(specs[i], 10 * i, Device::cpu()));
  }
  adamw_update_many(on_gpu);
  adamw_update_many(on_cpu);
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto tol = tolerance_for(specs[i].master);
    EXPECT_TRUE(gpu_matches_cpu(on_gpu[i].master, on_cpu[i].master, tol)) << "master " << i;
    EXPECT_TRUE(gpu_matches_cpu(on_gpu[i].exp_avg, on_cpu[i].exp_avg, tol)) << "exp_avg " << i;
    EXPECT_TRUE(gpu_matches_cpu(on_gpu[i].exp_avg_sq, on_cpu[i].exp_avg_sq, tol)) << "exp_avg_sq " << i;
    if (on_cpu[i].param.defined()) {
      EXPECT_TRUE(gpu_matches_cpu(on_gpu[i].param, on_cpu[i].param, tolerance_for(specs[i].param))) << "param " << i;
    }
  }
}

TEST_F(CudaAdamW, SingleTensorUpdateAndMismatchedDevices) {
  const Spec spec{{300}, DType::f32, DType::f32, DType::f32, 1e-3, 0.05, 4};
  AdamWTensors g = make(spec, 1, gpu()), c = make(spec, 1, Device::cpu());
  adamw_update(g.master, g.grad, g.exp_avg, g.exp_avg_sq, g.hyper);
  adamw_update(c.master, c.grad, c.exp_avg, c.exp_avg_sq, c.hyper);
  EXPECT_TRUE(gpu_matches_cpu(g.master, c.master));
  dcae::testing::expect_error([&] { adamw_update(g.master, c.grad, g.exp_avg, g.exp_avg_sq, g.hyper); },
                              {"adamw_update", "gradient"});
  dcae::testing::expect_error([&] { adamw_update_many({g, c}); }, {"adamw_update_many", "cuda:0"});
}

TEST_F(CudaAdamW, OptimizerStepsGpuParametersLikeCpuOnes) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor init = random_tensor({17, 9}, 5, dtype);
    std::vector<Tensor> weights;
    std::vector<std::unique_ptr<AdamW>> optims;
    for (Device device : {gpu(), Device::cpu()}) {
      Tensor w = init.to(device).clone().set_requires_grad(true);
      ParamGroup group;
      group.name = "all";
      group.params = {{"w", w}};
      group.base_lr = group.lr = 1e-2;
      group.weight_decay = 0.1;
      weights.push_back(w);
      optims.push_back(std::make_unique<AdamW>(std::vector<ParamGroup>{group}));
    }
    for (int step = 0; step < 3; ++step) {
      const Tensor g = random_tensor({17, 9}, 100 + step, dtype);
      weights[0].set_grad(g.to(gpu()));
      weights[1].set_grad(g);
      optims[0]->step();
      optims[1]->step();
    }
    EXPECT_TRUE(gpu_matches_cpu(weights[0], weights[1])) << dtype;
  }
}

#ifdef DCAE_WITH_CUDA

// Parameters of every kind the kernel handles: bf16 and f16 weights with fp32 masters (one spanning two chunks),
// an f32 weight that is its own master, an f64 one (its own launch); two groups with their own lr and decay.
struct Params {
  std::vector<Tensor> tensors;
  std::unique_ptr<AdamW> optim;

  explicit Params(bool capturable) {
    const std::vector<std::pair<Shape, DType>> specs = {
        {{1000, 70}, DType::bf16}, {{33}, DType::f32}, {{5, 7, 3}, DType::f16}, {{129}, DType::f64}};
    ParamGroup decay, no_decay;
    decay.name = "default";
    decay.base_lr = decay.lr = 1e-2;
    decay.weight_decay = 0.05;
    no_decay.name = "default.no_decay";
    no_decay.base_lr = no_decay.lr = 3e-3;
    for (size_t i = 0; i < specs.size(); ++i) {
      Tensor w = random_tensor(specs[i].first, 40 + i, specs[i].second).to(gpu()).set_requires_grad(true);
      tensors.push_back(w);
      (i % 2 == 0 ? decay : no_decay).params.emplace_back("p" + std::to_string(i), w);
    }
    optim = std::make_unique<AdamW>(std::vector<ParamGroup>{decay, no_decay}, 0.9, 0.99, 1e-8);
    if (capturable) optim->make_capturable();
  }
  // Gradients of step `k`: large (clipped at max_norm 100) on even steps, small on odd ones.
  std::vector<Tensor> grads(int k) const {
    std::vector<Tensor> out;
    for (size_t i = 0; i < tensors.size(); ++i)
      out.push_back(random_tensor(tensors[i].shape(), 500 + 10 * k + i, tensors[i].dtype(), k % 2 ? 0.1 : 1.0).to(gpu()));
    return out;
  }
  void set_grads(const std::vector<Tensor>& g) const {
    for (size_t i = 0; i < tensors.size(); ++i) tensors[i].set_grad(g[i]);
  }
};

// Bit for bit, except f64 tensors within `f64_rtol`.
::testing::AssertionResult same_state(const Params& a, const Params& b, double f64_rtol = 0) {
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const std::string name = "p" + std::to_string(i);
    const ParamState &sa = a.optim->state(name), &sb = b.optim->state(name);
    const Tensor pairs[3][2] = {{a.tensors[i], b.tensors[i]},
                                {sa.slots.at("exp_avg"), sb.slots.at("exp_avg")},
                                {sa.slots.at("exp_avg_sq"), sb.slots.at("exp_avg_sq")}};
    for (const auto& pair : pairs)
      if (!dcae::testing::all_close(pair[0].to(Device::cpu()), pair[1].to(Device::cpu()), 0,
                                    pair[0].dtype() == DType::f64 ? f64_rtol : 0))
        return ::testing::AssertionFailure() << "parameter " << name << " or its moments differ";
  }
  for (size_t m = 0; m < a.optim->named_masters().size(); ++m) {
    const Tensor& master = a.optim->named_masters()[m].second;
    if (!dcae::testing::all_close(master.to(Device::cpu()), b.optim->named_masters()[m].second.to(Device::cpu()), 0,
                                  master.dtype() == DType::f64 ? f64_rtol : 0))
      return ::testing::AssertionFailure() << "master " << a.optim->named_masters()[m].first << " differs";
  }
  return ::testing::AssertionSuccess();
}

TEST_F(CudaAdamW, CapturableEagerStepsEqualTheHostScalarKernel) {
  Params host_scalars(false), device_scalars(true);
  for (int k = 0; k < 3; ++k) {
    const std::vector<Tensor> g = host_scalars.grads(k);
    for (Params* p : {&host_scalars, &device_scalars}) {
      p->set_grads(g);
      p->optim->set_lr_factor(1.0 / (k + 1));
      p->optim->step();
    }
  }
  // Bias corrections come from CUDA's pow() on one side and the host's on the other: f32 results equal to the last
  // bit, f64 ones within an ulp or two of the scalars.
  EXPECT_TRUE(same_state(host_scalars, device_scalars, 1e-14));
  device_scalars.optim->sync_steps_to_host();
  EXPECT_EQ(device_scalars.optim->state("p0").step, 3);
  EXPECT_EQ(device_scalars.optim->state("p3").step, 3);
}

TEST_F(CudaAdamW, CapturedStepsReplayedWithChangingLrEqualEagerSteps) {
  const double max_norm = 100.0;
  Params eager(true), graphed(true);
  // Warm-up: one eager step each (creates the moments), identical so far.
  const std::vector<Tensor> g0 = eager.grads(0);
  std::vector<Tensor> static_grads;
  for (const Tensor& g : g0) static_grads.push_back(g.clone());
  eager.set_grads(g0);
  graphed.set_grads(static_grads);
  for (Params* p : {&eager, &graphed}) {
    p->optim->clip_next_step(grad_norm_tensor(p->tensors), max_norm);
    p->optim->step();
  }
  GraphedTrainStep step([&] {
    graphed.optim->clip_next_step(grad_norm_tensor(graphed.tensors), max_norm);
    graphed.optim->step();
  }, graphed.optim.get());
  step.capture();
  const double factors[] = {1.0, 0.5, 0.25, 2.0};
  for (int k = 1; k <= 4; ++k) {
    const std::vector<Tensor> g = eager.grads(k);
    eager.set_grads(g);
    eager.optim->set_lr_factor(factors[k - 1]);
    eager.optim->clip_next_step(grad_norm_tensor(eager.tensors), max_norm);
    eager.optim->step();
    for (size_t i = 0; i < g.size(); ++i) static_grads[i].copy_(g[i]);
    graphed.optim->set_lr_factor(factors[k - 1]);
    step.replay();
    EXPECT_TRUE(same_state(eager, graphed)) << "after replay " << k;
  }
  for (Params* p : {&eager, &graphed}) {
    p->optim->sync_steps_to_host();
    for (size_t i = 0; i < p->tensors.size(); ++i) EXPECT_EQ(p->optim->state("p" + std::to_string(i)).step, 5);
  }
  // Each replay reads the lr staged for it: with lr 0 the weights stay put.
  const Tensor before = graphed.tensors[1].to(Device::cpu());
  graphed.optim->set_lr_factor(0.0);
  step.replay();
  EXPECT_TRUE(dcae::testing::all_close(graphed.tensors[1].to(Device::cpu()), before, 0, 0)) << "lr 0 moved p1";
}

TEST_F(CudaAdamW, NonFiniteGradientNormSkipsTheCapturedStepOnTheDevice) {
  Params p(true);
  std::vector<Tensor> static_grads = p.grads(0);
  p.set_grads(static_grads);
  p.optim->step();  // warm-up
  GraphedTrainStep step([&] {
    p.optim->clip_next_step(grad_norm_tensor(p.tensors), 1.0);
    p.optim->step();
  }, p.optim.get());
  step.capture();
  std::vector<Tensor> before;
  for (const Tensor& t : p.tensors) before.push_back(t.to(Device::cpu()));
  static_grads[2].fill_(std::numeric_limits<double>::quiet_NaN());
  step.replay();
  p.optim->sync_steps_to_host();
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    EXPECT_TRUE(dcae::testing::all_close(p.tensors[i].to(Device::cpu()), before[i], 0, 0)) << "parameter " << i;
    EXPECT_EQ(p.optim->state("p" + std::to_string(i)).step, 1);
  }
  static_grads[2].copy_(p.grads(1)[2]);
  step.replay();
  p.optim->sync_steps_to_host();
  EXPECT_EQ(p.optim->state("p0").step, 2);
  EXPECT_FALSE(dcae::testing::all_close(p.tensors[0].to(Device::cpu()), before[0], 0, 0));
}

#endif

}  // namespace
}  // namespace dcae::trainer
