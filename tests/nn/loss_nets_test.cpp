#include <gtest/gtest.h>

#include <filesystem>

#include "nn/io/safetensors.h"
#include "nn/loss_nets/lpips.h"
#include "nn/loss_nets/patchgan.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "tests/testing/check.h"

namespace dcae::nn {
namespace {

TEST(Lpips, NamesMatchTheLpipsPackageAndDistanceBehaves) {
  Generator gen(5);
  Lpips lpips(InitOptions{&gen, DType::f64});
  const auto state = lpips.state();
  EXPECT_EQ(state.front().first, "scaling_layer.shift");
  EXPECT_TRUE(lpips.parameter("net.slice3.14.weight").shape() == (Shape{256, 256, 3, 3}));
  EXPECT_TRUE(lpips.parameter("lin4.model.1.weight").shape() == (Shape{1, 512, 1, 1}));
  EXPECT_EQ(lpips.num_parameters(true), 0);  // frozen
  EXPECT_EQ(lpips.num_parameters(), 14714688 + 1472);  // VGG16 conv features + the five heads
  const Tensor x = testing::random_tensor({2, 16, 16, 3}, 6, DType::f64, 0.5);
  const Tensor y = testing::random_tensor({2, 16, 16, 3}, 7, DType::f64, 0.5);
  EXPECT_NEAR(ops::max(ops::abs(lpips.distance(x, x))).item<double>(), 0.0, 1e-12);
  EXPECT_TRUE(testing::all_close(lpips.distance(x, y), lpips.distance(y, x), 1e-12, 1e-12));
  // The gradient reaches the images through the frozen network.
  Tensor xg = x.clone().set_requires_grad(true);
  EXPECT_TRUE(testing::directional_gradcheck(
      [&](const std::vector<Tensor>& in) { return lpips.distance(in[0], y); }, {xg}));
  EXPECT_THROW(lpips.distance(x, zeros({2, 16, 16, 1}, DType::f64)), Error);
}

TEST(Lpips, LoadsASafetensorsDumpAndRejectsAMissingTensor) {
  Generator gen(8);
  Lpips source(InitOptions{&gen, DType::f32});
  const std::string path = (std::filesystem::temp_directory_path() / "dcae_lpips_test.safetensors").string();
  std::vector<NamedTensor> dump;
  for (const auto& [name, t] : source.state())
    dump.emplace_back(name, name.rfind("scaling_layer", 0) == 0 ? t.reshape({1, 3, 1, 1}) : t);
  write_safetensors(path, dump);
  Generator other(9);
  Lpips target(InitOptions{&other, DType::f32});
  target.load(path);
  EXPECT_EQ(target.parameter("net.slice5.28.bias").to_vector<float>(), source.parameter("net.slice5.28.bias").to_vector<float>());
  dump.pop_back();
  write_safetensors(path, dump);
  EXPECT_THROW(target.load(path), Error);
  std::filesystem::remove(path);
}

TEST(PatchGan, ShapesNamesAndGradients) {
  Generator gen(10);
  PatchGanDiscriminator big({}, InitOptions{&gen, DType::f32, false});
  EXPECT_EQ(big.num_parameters(), 2765633);  // taming's NLayerDiscriminator(3, 64, 3), counted with PyTorch
  PatchGanOptions small{3, 4, 2, "batch_norm"};
  PatchGanDiscriminator d(small, InitOptions{&gen, DType::f64});
  EXPECT_NO_THROW(d.parameter("main.0.weight"));
  EXPECT_NO_THROW(d.parameter("main.3.weight"));  // first BatchNorm
  const Tensor x = testing::random_tensor({2, 16, 16, 3}, 11);
  EXPECT_EQ(d.forward(x).shape(), (Shape{2, 2, 2, 1}));  // 16 -> 8 -> 4 -> 3 -> 2
  d.eval();
  std::vector<Tensor> inputs{x.clone().set_requires_grad(true)};
  for (const auto& [name, p] : d.named_parameters()) inputs.push_back(p);
  EXPECT_TRUE(testing::directional_gradcheck([&](const std::vector<Tensor>& in) { return d.forward(in[0]); }, inputs));
  EXPECT_THROW(PatchGanDiscriminator(PatchGanOptions{3, 4, 2, "layer_norm"}), Error);
}

}  // namespace
}  // namespace dcae::nn
