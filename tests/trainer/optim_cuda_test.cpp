// The fused multi-tensor AdamW on the GPU against the CPU update (trainer/optim/update_math.h), and the AdamW
// optimizer stepping GPU parameters. Skips without a GPU.
#include <gtest/gtest.h>

#include "ops/unary.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/testing/check.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/update_math.h"

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

}  // namespace
}  // namespace dcae::trainer
