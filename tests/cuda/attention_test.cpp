// Scaled dot-product attention on the GPU against the CPU kernels: the tensor-core path (bf16/f16, D % 8 == 0,
// D <= 128; the backward with the forward output given and recomputed) and the SIMT path (everything else), masks
// of every broadcast shape, fully masked rows, strided operands, dscores, and gradients through autograd. Accumulation orders differ from the CPU's GEMMs, so results
// are compared by relative L2 norm (fp32 1e-5, bf16/f16 1e-2), never passing NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ops/attention.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"
#include "ops/view.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::random_tensor;

class CudaAttention : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

double l2_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f64: return 1e-12;
    case DType::f32: return 1e-5;
    default: return 1e-2;
  }
}

// ||gpu - cpu|| <= tol * ||cpu|| over the whole tensor, same shape and dtype, no NaN anywhere.
::testing::AssertionResult close_in_l2(const Tensor& on_gpu, const Tensor& on_cpu, double tol) {
  if (!on_gpu.defined() || !on_cpu.defined()) return ::testing::AssertionFailure() << "undefined result";
  if (!on_gpu.device().is_cuda()) return ::testing::AssertionFailure() << "not a GPU result: " << on_gpu.str();
  if (on_gpu.shape() != on_cpu.shape() || on_gpu.dtype() != on_cpu.dtype())
    return ::testing::AssertionFailure() << on_gpu.str() << " vs CPU " << on_cpu.str();
  const std::vector<double> a = on_gpu.to(Device::cpu()).to_vector<double>(), b = on_cpu.to_vector<double>();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i]))
      return ::testing::AssertionFailure() << "NaN at " << i << " (GPU " << a[i] << ", CPU " << b[i] << ")";
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  if (std::sqrt(diff) > tol * std::sqrt(norm) + 1e-300)
    return ::testing::AssertionFailure() << "relative L2 error " << std::sqrt(diff / std::max(norm, 1e-300))
                                         << " > " << tol;
  return ::testing::AssertionSuccess();
}

// f on the CPU inputs and on GPU copies, then the gradients of sum(f * direction) w.r.t. every floating input; the
// output and every gradient compared in relative L2.
::testing::AssertionResult gradients_close(const testing::OpFn& f, const std::vector<Tensor>& cpu_inputs, double tol) {
  const auto run = [&](Device device) {
    std::vector<Tensor> inputs;
    for (const Tensor& t : cpu_inputs) inputs.push_back(t.to(device).detach().clone().set_requires_grad(true));
    const Tensor out = f(inputs);
    autograd::backward(ops::sum(ops::mul(out, random_tensor(out.shape(), 4242, out.dtype()).to(device))));
    std::vector<Tensor> results = {out.detach()};
    for (const Tensor& t : inputs) results.push_back(t.grad());
    return results;
  };
  const std::vector<Tensor> on_gpu = run(gpu()), on_cpu = run(Device::cpu());
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    auto result = close_in_l2(on_gpu[i], on_cpu[i], tol);
    if (!result) return result << (i == 0 ? " (output)" : " (gradient of input " + std::to_string(i - 1) + ")");
  }
  return ::testing::AssertionSuccess();
}

struct Case {
  int64_t batch, heads, lq, lk, d, dv;
};

// Forward and backward (all four gradients) of one case on both devices.
void check_case(const Case& c, DType dtype, const Tensor& mask, double scale, const std::string& what) {
  const Tensor q = random_tensor({c.batch, c.heads, c.lq, c.d}, 1, dtype);
  const Tensor k = random_tensor({c.batch, c.heads, c.lk, c.d}, 2, dtype);
  const Tensor v = random_tensor({c.batch, c.heads, c.lk, c.dv}, 3, dtype);
  const Tensor gmask = mask.defined() ? mask.to(gpu()) : mask;
  Tensor glse, clse;
  const Tensor gout = DCAE_KERNEL(gpu(), attention_forward, q.to(gpu()), k.to(gpu()), v.to(gpu()), gmask, scale, glse);
  const Tensor cout = ops::cpu::attention_forward(q, k, v, mask, scale, clse);
  const double tol = l2_tolerance(dtype);
  EXPECT_TRUE(close_in_l2(gout, cout, tol)) << what << " " << dtype << " out";
  // Log-sum-exp is an fp32 (f64) statistic: compared at the compute dtype's tolerance, -inf rows included.
  const std::vector<double> gl = glse.to(Device::cpu()).to_vector<double>(), cl = clse.to_vector<double>();
  ASSERT_EQ(gl.size(), cl.size());
  for (size_t i = 0; i < cl.size(); ++i) {
    if (std::isinf(cl[i])) {
      EXPECT_EQ(gl[i], cl[i]) << what << " " << dtype << " lse " << i;
    } else {
      EXPECT_NEAR(gl[i], cl[i], (dtype == DType::f64 ? 1e-12 : 1e-4) * (1 + std::abs(cl[i])))
          << what << " " << dtype << " lse " << i;
    }
  }
  const Tensor g = random_tensor({c.batch, c.heads, c.lq, c.dv}, 4, dtype);
  const bool scores = mask.defined();
  const std::vector<Tensor> cd = ops::cpu::attention_backward(g, q, k, v, mask, scale, clse, cout, scores);
  const char* names[] = {"dq", "dk", "dv", "dscores"};
  // With the forward output (what autograd passes) and without it (the tensor-core path recomputes it).
  for (const Tensor& saved_out : {gout, Tensor()}) {
    const std::vector<Tensor> gd = DCAE_KERNEL(gpu(), attention_backward, g.to(gpu()), q.to(gpu()), k.to(gpu()),
                                               v.to(gpu()), gmask, scale, glse, saved_out, scores);
    const std::string with = saved_out.defined() ? " (out given)" : " (out recomputed)";
    for (size_t i = 0; i < (scores ? 4u : 3u); ++i) {
      EXPECT_TRUE(close_in_l2(gd[i], cd[i], tol)) << what << " " << dtype << " " << names[i] << with;
    }
    if (!scores) {
      EXPECT_FALSE(gd[3].defined());
    }
  }
}

// An additive mask of `shape` with about a fifth of the entries -inf.
Tensor random_mask(const Shape& shape, uint64_t seed, DType dtype = DType::f32) {
  std::vector<double> v = random_tensor(shape, seed).to_vector<double>();
  for (double& e : v)
    if (e > 0.85) e = -std::numeric_limits<double>::infinity();
  return from_doubles(v, shape, dtype);
}

TEST_F(CudaAttention, TensorCoreAndSimtPathsMatchCpu) {
  const std::vector<Case> cases = {
      {2, 3, 37, 45, 20, 12},    // D % 8 != 0, D != Dv: SIMT for every dtype
      {1, 2, 70, 130, 72, 72},   // DiT head size: tensor cores pad 72 to 80; partial query and key tiles
      {2, 2, 64, 64, 64, 64},    // whole tiles
      {1, 1, 33, 100, 128, 128}, // the largest tensor-core head
      {1, 2, 5, 3, 16, 16},      // tiny: one partial tile each way
      {1, 1, 1, 1, 8, 8},
  };
  for (const Case& c : cases) {
    const std::string what = "B" + std::to_string(c.batch) + " H" + std::to_string(c.heads) + " Lq" +
                             std::to_string(c.lq) + " Lk" + std::to_string(c.lk) + " D" + std::to_string(c.d);
    for (DType dtype : kFloatDtypes) {
      check_case(c, dtype, Tensor(), 0.0 + 1.0 / std::sqrt(static_cast<double>(c.d)), what);
      check_case(c, dtype, random_mask({c.batch, 1, c.lq, c.lk}, 5), 0.3, what + " masked");
    }
  }
}

// The diffusion-transformer head sizes on the tensor-core kernels: odd token counts (partial query tiles of 128 /
// 64 and key tiles of 64 / 128), head sizes 32, 64 and 72 (72 runs unpadded with a k8 tail), both half dtypes and
// f32 (the SIMT path, 1e-5), with and without a mask, more than one key block for the backward (257 keys).
TEST_F(CudaAttention, TransformerHeadSizesWithOddTokenCounts) {
  const std::vector<Case> cases = {
      {1, 2, 77, 77, 72, 72}, {1, 1, 257, 257, 72, 72}, {2, 1, 77, 130, 64, 64},
      {1, 1, 257, 77, 32, 32}, {1, 1, 129, 257, 64, 64}, {1, 1, 200, 64, 72, 72},
  };
  for (const Case& c : cases) {
    const std::string what = "B" + std::to_string(c.batch) + " H" + std::to_string(c.heads) + " Lq" +
                             std::to_string(c.lq) + " Lk" + std::to_string(c.lk) + " D" + std::to_string(c.d);
    for (DType dtype : {DType::bf16, DType::f16, DType::f32}) {
      check_case(c, dtype, Tensor(), 1.0 / std::sqrt(static_cast<double>(c.d)), what);
      if (dtype != DType::f32) check_case(c, dtype, random_mask({1, c.heads, c.lq, c.lk}, 17), 0.2, what + " masked");
    }
  }
}

// Gradients of q, k and v through autograd (the forward output saved for the backward) at a DiT shape.
TEST_F(CudaAttention, TransformerGradientsThroughAutograd) {
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (int64_t d : {64, 72}) {
      const Tensor q = random_tensor({2, 3, 77, d}, 20, dtype), k = random_tensor({2, 3, 77, d}, 21, dtype);
      const Tensor v = random_tensor({2, 3, 77, d}, 22, dtype);
      EXPECT_TRUE(gradients_close([](const auto& in) { return ops::scaled_dot_product_attention(in[0], in[1], in[2]); },
                                  {q, k, v}, l2_tolerance(dtype)))
          << dtype << " D" << d;
    }
  }
}

TEST_F(CudaAttention, MasksOfEveryBroadcastShapeAndDtype) {
  const Case c{2, 3, 19, 40, 32, 32};
  const std::vector<Shape> shapes = {{40}, {2, 1, 1, 40}, {1, 3, 19, 40}, {19, 1}, {2, 3, 19, 40}};
  for (const Shape& shape : shapes)
    for (DType dtype : {DType::f32, DType::bf16})
      for (DType mask_dtype : {DType::f32, DType::bf16, DType::f64})
        check_case(c, dtype, random_mask(shape, 6, mask_dtype), 0.25, "mask " + shape_str(shape));
}

TEST_F(CudaAttention, FullyMaskedRowsGiveZerosAndNoGradient) {
  const Case c{1, 2, 9, 70, 64, 64};
  for (DType dtype : kFloatDtypes) {
    std::vector<double> m = random_tensor({1, 2, 9, 70}, 7).to_vector<double>();
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t j = 0; j < 70; ++j) m[(h * 9 + 4) * 70 + j] = -std::numeric_limits<double>::infinity();  // row 4
    const Tensor mask = from_doubles(m, {1, 2, 9, 70}, DType::f32);
    check_case(c, dtype, mask, 0.2, "fully masked row 4");
    const Tensor q = random_tensor({1, 2, 9, 64}, 8, dtype).to(gpu()), k = random_tensor({1, 2, 70, 64}, 9, dtype).to(gpu());
    const Tensor out = ops::scaled_dot_product_attention(q, k, k, mask.to(gpu()));
    const std::vector<double> values = out.to(Device::cpu()).to_vector<double>();
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(values[(h * 9 + 4) * 64 + d], 0.0) << dtype;
  }
}

TEST_F(CudaAttention, StridedOperandsFromATokenMajorLayout) {
  // q and k as [B, L, H, D] maps viewed as [B, H, L, D] (the transformer layout); v a view one element into its
  // storage (misaligned rows: the tensor-core path copies it).
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor q = random_tensor({2, 21, 4, 40}, 10, dtype), k = random_tensor({2, 30, 4, 40}, 11, dtype);
    const Tensor v = random_tensor({2 * 4 * 30 * 40 + 1}, 12, dtype);
    EXPECT_TRUE(gradients_close(
        [](const auto& in) {
          return ops::scaled_dot_product_attention(
              ops::permute(in[0], {0, 2, 1, 3}), ops::permute(in[1], {0, 2, 1, 3}),
              ops::reshape(ops::narrow(in[2], 0, 1, 2 * 4 * 30 * 40), {2, 4, 30, 40}));
        },
        {q, k, v}, l2_tolerance(dtype)))
        << dtype;
  }
}

TEST_F(CudaAttention, MaskGradientThroughAutograd) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor q = random_tensor({2, 2, 11, 16}, 13, dtype), k = random_tensor({2, 2, 17, 16}, 14, dtype);
    const Tensor v = random_tensor({2, 2, 17, 16}, 15, dtype), mask = random_tensor({2, 1, 11, 17}, 16, dtype);
    EXPECT_TRUE(gradients_close(
        [](const auto& in) { return ops::scaled_dot_product_attention(in[0], in[1], in[2], in[3], 0.5); },
        {q, k, v, mask}, l2_tolerance(dtype)))
        << dtype;
  }
}

TEST_F(CudaAttention, ErrorsNameTheShapes) {
  const Tensor q = zeros({1, 2, 3, 8}, DType::f32, gpu()), k = zeros({1, 2, 5, 8}, DType::f32, gpu());
  testing::expect_error([&] { ops::scaled_dot_product_attention(q, zeros({1, 2, 5, 4}, DType::f32, gpu()), k); },
                        {"scaled_dot_product_attention", "[1, 2, 5, 4]"});
  testing::expect_error([&] { ops::scaled_dot_product_attention(q, k, k, zeros({4, 5}, DType::f32, gpu())); },
                        {"mask", "[4, 5]", "[1, 2, 3, 5]"});
  testing::expect_error([&] { ops::scaled_dot_product_attention(q, k.to(Device::cpu()), k); }, {"different devices"});
}

}  // namespace
}  // namespace dcae
