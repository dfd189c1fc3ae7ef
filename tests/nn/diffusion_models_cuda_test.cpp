// DiT and UViT on the GPU are as accurate as on the CPU: forward and every gradient of tiny configurations with
// random, well-conditioned weights, measured against a CPU float64 run. f32 within 1e-5 (outputs) and 1e-4
// (gradients) relative to the largest value, or 4x the CPU's own f32 error if that is larger; bf16 within bf16
// rounding (3e-2 / 6e-2), a bound the CPU's bf16 run meets too. The CPU half runs everywhere.
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd/engine.h"
#include "nn/diffusion/zoo.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae::nn::diffusion {
namespace {

struct Pass {
  Tensor output;                   // f64 on the CPU
  std::vector<NamedTensor> grads;  // x first, then every trainable parameter
};

const std::vector<std::pair<std::string, nlohmann::json>>& tiny_configs() {
  static const std::vector<std::pair<std::string, nlohmann::json>> configs = {
      {"uvit-s", {{"depth", 2}, {"hidden_size", 32}, {"num_heads", 4}, {"patch_size", 2}, {"mlp_time_embed", true}}},
      {"dit-xl", {{"depth", 2}, {"hidden_size", 32}, {"num_heads", 2}, {"patch_size", 1}}},
  };
  return configs;
}

// Builds the tiny model with random values everywhere (so DiT's zero-initialised layers carry signal), places it,
// and runs forward + backward of sum(out * direction).
Pass run_tiny(const std::string& name, const nlohmann::json& overrides, Device device, DType dtype) {
  Generator gen(11);
  auto model = make_diffusion_model(name, {4, 8, 10}, overrides, {&gen, DType::f32});
  uint64_t seed = 500;
  // Matrices at 1/sqrt(fan-in), vectors at 0.3: every layer keeps its input's scale, so the network is as well
  // conditioned as a trained one and bf16 can be held to bf16 rounding (at 0.3 everywhere, DiT's modulations
  // amplified rounding ~250x: f32 was 3e-5 and bf16 0.29 from f64).
  for (const auto& [pname, p] : model->named_parameters()) {
    if (!p.requires_grad()) continue;
    const double fan_in = p.dim() >= 2 ? static_cast<double>(p.numel() / p.shape()[0]) : 0.0;
    const double scale = p.dim() >= 2 ? 1.0 / std::sqrt(fan_in) : 0.3;
    assign_in_place(p, testing::random_tensor(p.shape(), seed++, DType::f32, scale));
  }
  model->to(device);
  model->to(dtype);
  const Tensor x = testing::random_tensor({3, 8, 8, 4}, 1, dtype).to(device).set_requires_grad(true);
  const Tensor t = from_doubles({0, 321.5, 999}, {3}).to(device);
  const Tensor labels = from_vector<int64_t>({1, 9, 10}, {3}).to(device);  // 10 = no class
  const Tensor out = model->forward(x, t, labels);
  const Tensor direction = testing::random_tensor(out.shape(), 2, dtype).to(device);
  autograd::backward(ops::sum(ops::mul(out, direction)));
  auto host = [](const Tensor& v) { return v.to(Device::cpu()).to(DType::f64); };
  Pass pass{host(out.detach()), {{"x", host(x.grad())}}};
  for (const auto& [pname, p] : model->named_parameters())
    if (p.requires_grad()) pass.grads.emplace_back(pname, host(p.grad()));
  return pass;
}

double rel_max_error(const Tensor& a, const Tensor& b) {
  const double diff = ops::max(ops::abs(ops::sub(a, b))).item<double>();
  return diff / std::max(1e-30, ops::max(ops::abs(b)).item<double>());
}

struct Errors {
  double output = 0, worst_grad = 0;
  std::string worst_name;
};

Errors errors_against(const Pass& pass, const Pass& reference) {
  Errors e;
  e.output = rel_max_error(pass.output, reference.output);
  EXPECT_EQ(pass.grads.size(), reference.grads.size());
  for (size_t i = 0; i < reference.grads.size() && i < pass.grads.size(); ++i) {
    const double err = rel_max_error(pass.grads[i].second, reference.grads[i].second);
    if (err > e.worst_grad) e.worst_grad = err, e.worst_name = reference.grads[i].first;
  }
  return e;
}

TEST(DiffusionModelsPrecision, CpuF32StaysWithinItsRoundingOfF64) {
  for (const auto& [name, overrides] : tiny_configs()) {
    const Errors e = errors_against(run_tiny(name, overrides, Device::cpu(), DType::f32),
                                    run_tiny(name, overrides, Device::cpu(), DType::f64));
    EXPECT_LE(e.output, 1e-5) << name;
    EXPECT_LE(e.worst_grad, 1e-4) << name << " " << e.worst_name;
    EXPECT_GT(e.output, 0.0) << name << ": f32 and f64 runs cannot agree exactly";
    // The same bound the GPU's bf16 run is held to (below), on the CPU: the model is conditioned for it.
    const Errors half = errors_against(run_tiny(name, overrides, Device::cpu(), DType::bf16),
                                       run_tiny(name, overrides, Device::cpu(), DType::f64));
    EXPECT_LE(half.output, 3e-2) << name << " bf16";
    EXPECT_LE(half.worst_grad, 6e-2) << name << " bf16 " << half.worst_name;
    std::cout << name << ": CPU relative max error vs f64 - f32 output " << e.output << " gradient " << e.worst_grad
              << ", bf16 output " << half.output << " gradient " << half.worst_grad << std::endl;
  }
}

#ifdef DCAE_WITH_CUDA
class CudaDiffusionModels : public testing::CudaTest {};

TEST_F(CudaDiffusionModels, ForwardAndGradientsAreAsAccurateAsTheCpu) {
  for (const auto& [name, overrides] : tiny_configs()) {
    const Pass exact = run_tiny(name, overrides, Device::cpu(), DType::f64);
    const Errors cpu = errors_against(run_tiny(name, overrides, Device::cpu(), DType::f32), exact);
    const Errors gpu32 = errors_against(run_tiny(name, overrides, testing::gpu(), DType::f32), exact);
    EXPECT_LE(gpu32.output, std::max(1e-5, 4 * cpu.output)) << name << " (CPU f32: " << cpu.output << ")";
    EXPECT_LE(gpu32.worst_grad, std::max(1e-4, 4 * cpu.worst_grad))
        << name << " " << gpu32.worst_name << " (CPU f32: " << cpu.worst_grad << ")";
    const Errors gpu16 = errors_against(run_tiny(name, overrides, testing::gpu(), DType::bf16), exact);
    EXPECT_LE(gpu16.output, 3e-2) << name << " bf16";
    EXPECT_LE(gpu16.worst_grad, 6e-2) << name << " bf16 " << gpu16.worst_name;
    std::cout << name << ": relative max error vs CPU f64 - output f32 CPU " << cpu.output << " GPU " << gpu32.output
              << " bf16 GPU " << gpu16.output << "; worst gradient f32 CPU " << cpu.worst_grad << " GPU "
              << gpu32.worst_grad << " bf16 GPU " << gpu16.worst_grad << std::endl;
  }
}
#endif

}  // namespace
}  // namespace dcae::nn::diffusion
