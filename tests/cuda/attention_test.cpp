// Scaled dot-product attention on the GPU against the CPU kernels: the tensor-core path (bf16/f16, D % 8 == 0,
// D <= 128; the backward with the forward output given and recomputed) and the SIMT path (everything else), masks
// of every broadcast shape, fully masked rows, strided operands, dscores, and gradients through autograd. Every
// test runs twice: with our kernels only (Own) and with cuDNN's fused attention asked first wherever it can take
// the problem (Cudnn: bf16/f16 without a mask; our kernels where cuDNN has no engine). Accumulation orders differ
// from the CPU's GEMMs, so results are compared by relative L2 norm (fp32 1e-5, bf16/f16 1e-2), never passing NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>

#include "ops/attention.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"
#include "ops/view.h"
#include "tests/cuda/attention_test_util.h"

namespace dcae {
namespace {

using testing::AttentionBackend;
using testing::Case;
using testing::check_case;
using testing::close_in_l2;
using testing::gpu;
using testing::gradients_close;
using testing::kFloatDtypes;
using testing::l2_tolerance;
using testing::random_mask;
using testing::random_tensor;

class CudaAttention : public testing::CudaTest, public ::testing::WithParamInterface<AttentionBackend> {
 protected:
  void SetUp() override {
    testing::CudaTest::SetUp();
    if (IsSkipped()) return;
    scope_ = std::make_unique<testing::AttentionBackendScope>(GetParam());
  }
  void TearDown() override {
    scope_.reset();
    testing::CudaTest::TearDown();
  }

 private:
  std::unique_ptr<testing::AttentionBackendScope> scope_;
};

TEST_P(CudaAttention, TensorCoreAndSimtPathsMatchCpu) {
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
TEST_P(CudaAttention, TransformerHeadSizesWithOddTokenCounts) {
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
TEST_P(CudaAttention, TransformerGradientsThroughAutograd) {
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

TEST_P(CudaAttention, MasksOfEveryBroadcastShapeAndDtype) {
  const Case c{2, 3, 19, 40, 32, 32};
  const std::vector<Shape> shapes = {{40}, {2, 1, 1, 40}, {1, 3, 19, 40}, {19, 1}, {2, 3, 19, 40}};
  for (const Shape& shape : shapes)
    for (DType dtype : {DType::f32, DType::bf16})
      for (DType mask_dtype : {DType::f32, DType::bf16, DType::f64})
        check_case(c, dtype, random_mask(shape, 6, mask_dtype), 0.25, "mask " + shape_str(shape));
}

TEST_P(CudaAttention, FullyMaskedRowsGiveZerosAndNoGradient) {
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

TEST_P(CudaAttention, StridedOperandsFromATokenMajorLayout) {
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

TEST_P(CudaAttention, MaskGradientThroughAutograd) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor q = random_tensor({2, 2, 11, 16}, 13, dtype), k = random_tensor({2, 2, 17, 16}, 14, dtype);
    const Tensor v = random_tensor({2, 2, 17, 16}, 15, dtype), mask = random_tensor({2, 1, 11, 17}, 16, dtype);
    EXPECT_TRUE(gradients_close(
        [](const auto& in) { return ops::scaled_dot_product_attention(in[0], in[1], in[2], in[3], 0.5); },
        {q, k, v, mask}, l2_tolerance(dtype)))
        << dtype;
  }
}

TEST_P(CudaAttention, ErrorsNameTheShapes) {
  const Tensor q = zeros({1, 2, 3, 8}, DType::f32, gpu()), k = zeros({1, 2, 5, 8}, DType::f32, gpu());
  testing::expect_error([&] { ops::scaled_dot_product_attention(q, zeros({1, 2, 5, 4}, DType::f32, gpu()), k); },
                        {"scaled_dot_product_attention", "[1, 2, 5, 4]"});
  testing::expect_error([&] { ops::scaled_dot_product_attention(q, k, k, zeros({4, 5}, DType::f32, gpu())); },
                        {"mask", "[4, 5]", "[1, 2, 3, 5]"});
  testing::expect_error([&] { ops::scaled_dot_product_attention(q, k.to(Device::cpu()), k); }, {"different devices"});
}

INSTANTIATE_TEST_SUITE_P(Backends, CudaAttention, ::testing::Values(AttentionBackend::own, AttentionBackend::cudnn),
                         [](const ::testing::TestParamInfo<AttentionBackend>& info) {
                           return info.param == AttentionBackend::own ? "Own" : "Cudnn";
                         });

}  // namespace
}  // namespace dcae
