// ReLU linear attention on the GPU against the CPU kernels: both forms, the DC-AE head size with several token
// chunks and tiles, the quadratic form falling back to the linear kernels when a head does not fit in shared memory,
// and gradients through autograd. Compared by relative L2 norm (fp32 1e-5, bf16/f16 1e-2).
#include <gtest/gtest.h>

#include <cmath>

#include "ops/attention.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::random_tensor;

class CudaLinearAttention : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

double l2_tolerance(DType dtype) { return dtype == DType::f64 ? 1e-12 : dtype == DType::f32 ? 1e-5 : 1e-2; }

::testing::AssertionResult close_in_l2(const Tensor& on_gpu, const Tensor& on_cpu, double tol) {
  if (!on_gpu.device().is_cuda()) return ::testing::AssertionFailure() << "not a GPU result: " << on_gpu.str();
  if (on_gpu.shape() != on_cpu.shape() || on_gpu.dtype() != on_cpu.dtype())
    return ::testing::AssertionFailure() << on_gpu.str() << " vs CPU " << on_cpu.str();
  const std::vector<double> a = on_gpu.to(Device::cpu()).to_vector<double>(), b = on_cpu.to_vector<double>();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return ::testing::AssertionFailure() << "NaN at " << i;
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  if (std::sqrt(diff) > tol * std::sqrt(norm))
    return ::testing::AssertionFailure() << "relative L2 error " << std::sqrt(diff / norm) << " > " << tol;
  return ::testing::AssertionSuccess();
}

struct Case {
  Shape shape;  // qkv [N, H, W, 3C]
  int64_t head_dim;
  bool quadratic;
  const char* what;
};

TEST_F(CudaLinearAttention, BothFormsMatchCpuForwardAndBackward) {
  const std::vector<Case> cases = {
      {{2, 5, 7, 48}, 8, false, "linear, odd map, 2 heads"},
      {{2, 16, 16, 192}, 32, false, "linear, DC-AE head size, 256 tokens: several chunks and tiles"},
      {{1, 9, 13, 96}, 32, false, "linear, 117 tokens: a partial tile"},
      {{2, 4, 4, 192}, 32, true, "quadratic, DC-AE's 4x4 deepest map"},
      {{1, 3, 5, 96}, 16, true, "quadratic, 15 tokens"},
      {{1, 20, 20, 192}, 64, true, "quadratic too large for shared memory: the linear kernels"},
  };
  for (const Case& c : cases) {
    for (DType dtype : kFloatDtypes) {
      const Tensor qkv = random_tensor(c.shape, 1, dtype);
      const double tol = l2_tolerance(dtype);
      EXPECT_TRUE(close_in_l2(DCAE_KERNEL(gpu(), relu_linear_attention_forward, qkv.to(gpu()), c.head_dim, 1e-15, c.quadratic),
                              ops::cpu::relu_linear_attention_forward(qkv, c.head_dim, 1e-15, c.quadratic), tol))
          << c.what << " " << dtype;
      Shape out_shape = c.shape;
      out_shape.back() /= 3;
      const Tensor g = random_tensor(out_shape, 2, dtype);
      EXPECT_TRUE(close_in_l2(
          DCAE_KERNEL(gpu(), relu_linear_attention_backward, g.to(gpu()), qkv.to(gpu()), c.head_dim, 1e-15, c.quadratic),
          ops::cpu::relu_linear_attention_backward(g, qkv, c.head_dim, 1e-15, c.quadratic), tol))
          << c.what << " backward " << dtype;
    }
  }
}

TEST_F(CudaLinearAttention, EveryOutputElementIsWritten) {
  // Poisoned outputs: an element a kernel skipped would be NaN. Exercised on the DC-AE shape in both forms.
  for (bool quadratic : {false, true}) {
    const Tensor qkv = random_tensor({1, 4, 4, 96}, 3, DType::f32).to(gpu());
    const Tensor out = DCAE_KERNEL(gpu(), relu_linear_attention_forward, qkv, 32, 1e-15, quadratic);
    const Tensor dqkv = DCAE_KERNEL(gpu(), relu_linear_attention_backward, random_tensor({1, 4, 4, 32}, 4, DType::f32).to(gpu()),
                                    qkv, 32, 1e-15, quadratic);
    for (double v : out.to(Device::cpu()).to_vector<double>()) ASSERT_FALSE(std::isnan(v)) << "quadratic " << quadratic;
    for (double v : dqkv.to(Device::cpu()).to_vector<double>()) ASSERT_FALSE(std::isnan(v)) << "quadratic " << quadratic;
  }
}

TEST_F(CudaLinearAttention, GradientsThroughAutograd) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (auto form : {ops::LinearAttentionForm::automatic, ops::LinearAttentionForm::linear}) {
      const Tensor qkv = random_tensor({2, 6, 6, 96}, 5, dtype);
      std::vector<Tensor> grads;
      for (Device device : {gpu(), Device::cpu()}) {
        Tensor x = qkv.to(device).clone().set_requires_grad(true);
        const Tensor y = ops::relu_linear_attention(x, 32, 1e-15, form);
        autograd::backward(ops::sum(ops::mul(y, random_tensor(y.shape(), 6, dtype).to(device))));
        grads.push_back(x.grad());
      }
      EXPECT_TRUE(close_in_l2(grads[0], grads[1], l2_tolerance(dtype))) << dtype;
    }
  }
}

}  // namespace
}  // namespace dcae
