// The composite checks of the foundation: a ResBlock and an EfficientViT block built from our ops, with every
// parameter and the input gradchecked in f64.
#include <gtest/gtest.h>

#include "nn/dcae/blocks.h"
#include "tests/testing/check.h"

namespace dcae::nn::dcae_model {
namespace {

::testing::AssertionResult gradcheck_block(Layer& block, const Tensor& x) {
  std::vector<Tensor> inputs{x.clone().set_requires_grad(true)};
  for (const auto& [name, p] : block.named_parameters()) inputs.push_back(p);
  return testing::gradcheck([&](const std::vector<Tensor>& in) { return block.forward(in[0]); }, inputs,
                            {1e-6, 1e-5, 1e-4});
}

TEST(DcaeBlocks, ResBlockWithRmsNormAndBatchNormGradcheck) {
  Generator gen(11);
  InitOptions init{&gen, DType::f64};
  for (const char* norm : {"rms_norm", "batch_norm"}) {
    ResBlock block(4, norm, Activation::silu, init);
    if (std::string(norm) == "batch_norm") block.eval();
    EXPECT_EQ(block.num_parameters(), 18 * 4 * 4 + 3 * 4);  // spec §4.1: 18C^2 + 3C
    EXPECT_TRUE(gradcheck_block(block, testing::random_tensor({2, 3, 3, 4}, 12))) << norm;
  }
}

TEST(DcaeBlocks, EfficientViTBlockBothAttentionFormsAndMultiscale) {
  Generator gen(13);
  InitOptions init{&gen, DType::f64};
  // head_dim 4 with 8 channels: 2 heads. 3x3 = 9 tokens > 4 takes the linear form, 2x2 = 4 the quadratic one.
  for (const auto& scales : {std::vector<int64_t>{}, std::vector<int64_t>{5}}) {
    EfficientViTBlock block(8, 4, scales, "rms_norm", init);
    for (int64_t side : {3, 2}) {
      const Tensor x = testing::random_tensor({1, side, side, 8}, 14 + side).to(DType::f64);
      EXPECT_TRUE(gradcheck_block(block, x)) << "scales " << scales.size() << " side " << side;
    }
  }
  // Parameter counts from spec §4.2 (with head dim 32: EViT_GLU 16C^2 + 92C, EViTS5_GLU 17C^2 + 263C).
  InitOptions shapes_only{&gen, DType::f32, false};
  EXPECT_EQ(EfficientViTBlock(64, 32, {}, "rms_norm", shapes_only).num_parameters(), 16 * 64 * 64 + 92 * 64);
  EXPECT_EQ(EfficientViTBlock(64, 32, {5}, "rms_norm", shapes_only).num_parameters(), 17 * 64 * 64 + 263 * 64);
}

}  // namespace
}  // namespace dcae::nn::dcae_model
