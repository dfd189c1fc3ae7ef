// DiT / UViT / USiT (nn/diffusion): published parameter counts, reference state_dict names, shapes, gradients
// against finite differences, the "no class" label, initialisation and input errors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "nn/diffusion/dit.h"
#include "nn/diffusion/uvit.h"
#include "nn/diffusion/zoo.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "tests/testing/check.h"

namespace dcae::nn::diffusion {
namespace {

using testing::expect_error;
using testing::random_tensor;

const DenoiserShape kF32c32{32, 16, 1000};   // DC-AE f32c32 latents of 512^2 ImageNet: 32 channels, 16x16
const DenoiserShape kF64c128{128, 8, 1000};  // DC-AE f64c128 latents of 512^2 ImageNet: 128 channels, 8x8

InitOptions no_init() {
  InitOptions init;
  init.random_init = false;  // counting only: leave the (untouched, lazily mapped) weights unwritten
  return init;
}

int64_t trainable_count(const std::string& name, const DenoiserShape& shape) {
  return make_diffusion_model(name, shape, nlohmann::json::object(), no_init())->num_parameters(true);
}

// The README table of efficientvit's DC-AE diffusion models (spec section 13.2) gives millions to two decimals;
// the exact figures are the reference modules' trainable parameter counts for the same shapes.
TEST(DiffusionModels, ParameterCountsMatchThePublishedFigures) {
  EXPECT_EQ(trainable_count("uvit-s", kF32c32), 44788768);        // 44.79 M
  EXPECT_EQ(trainable_count("uvit-h", kF32c32), 500868896);       // 500.87 M
  EXPECT_EQ(trainable_count("usit-h", kF32c32), 500868896);       // 500.87 M (USiT-H = UViT-H network)
  EXPECT_EQ(trainable_count("uvit-h", kF64c128), 500868992);      // 500.87 M
  EXPECT_EQ(trainable_count("dit-xl", kF32c32), 674890048);       // 674.89 M (pos_embed is frozen, not counted)
  EXPECT_EQ(trainable_count("uvit-2b", kF32c32), 1580396576);     // 1580.40 M
  EXPECT_EQ(trainable_count("usit-2b", kF32c32), 1580396576);
  EXPECT_EQ(trainable_count("uvit-2b", kF64c128), 1580396672);    // 1580.40 M
  // DiT's frozen sin-cos table: 256 tokens x 1152.
  EXPECT_EQ(make_diffusion_model("dit-xl", kF32c32, {}, no_init())->num_parameters(false), 674890048 + 256 * 1152);
}

TEST(DiffusionModels, NamesAndOverrideErrorsListTheKnownOnes) {
  const std::vector<std::string> names = diffusion_model_names();
  for (const char* name : {"dit-xl", "uvit-s", "uvit-h", "uvit-2b", "usit-h", "usit-2b"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  expect_error([] { make_diffusion_model("uvit-xxl", kF32c32); }, {"uvit-xxl", "known:", "dit-xl", "usit-2b"});
  expect_error([] { make_diffusion_model("uvit-s", kF32c32, {{"depht", 4}}); }, {"depht", "known:", "depth"});
  expect_error([] { make_diffusion_model("dit-s", kF32c32, {{"qkv_bias", true}}); }, {"qkv_bias", "learn_sigma"});
  expect_error([] { make_diffusion_model("dit-s", kF32c32, {{"depth", "two"}}); }, {"depth", "wrong type"});
  expect_error([] { make_diffusion_model("uvit-s", kF32c32, {{"depth", 3}}); }, {"depth must be even"});
  expect_error([] { make_diffusion_model("uvit-s", kF32c32, {{"patch_size", 3}}); }, {"patch_size 3", "16"});
  expect_error([] { make_diffusion_model("uvit-s", kF32c32, {{"activation", "relu6"}}); }, {"relu6", "gelu"});
}

// Tiny configurations (also used by the PyTorch parity suite, tests/python/test_diffusion_parity.py).
const DenoiserShape kTiny{3, 4, 5};
nlohmann::json tiny_uvit_overrides() {
  return {{"depth", 2}, {"hidden_size", 8}, {"num_heads", 2}, {"patch_size", 2}, {"mlp_time_embed", true}};
}
nlohmann::json tiny_dit_overrides() {
  return {{"depth", 1}, {"hidden_size", 8}, {"num_heads", 2}, {"patch_size", 2}, {"frequency_embedding_size", 6}};
}

std::vector<std::string> state_names(const Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, t] : m.state()) names.push_back(name);
  return names;
}

// Written from the reference modules (efficientvit uvit.py / dit.py with timm's Attention, Mlp and PatchEmbed), in
// PyTorch state_dict order.
TEST(DiffusionModels, StateNamesAreTheReferenceKeys) {
  const std::vector<std::string> block = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight",
                                          "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
                                          "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
  std::vector<std::string> uvit = {"pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                                   "time_embed.0.weight", "time_embed.0.bias", "time_embed.2.weight",
                                   "time_embed.2.bias", "label_emb.embedding_table.weight"};
  for (const char* prefix : {"in_blocks.0.", "mid_block.", "out_blocks.0."})
    for (const auto& name : block) uvit.push_back(prefix + name);
  for (const char* name : {"out_blocks.0.skip_linear.weight", "out_blocks.0.skip_linear.bias", "norm.weight",
                           "norm.bias", "decoder_pred.weight", "decoder_pred.bias"})
    uvit.push_back(name);
  EXPECT_EQ(state_names(*make_diffusion_model("uvit-s", kTiny, tiny_uvit_overrides())), uvit);

  const std::vector<std::string> dit = {
      "pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight",
      "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias", "y_embedder.embedding_table.weight",
      "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias",
      "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight", "blocks.0.mlp.fc2.bias",
      "blocks.0.adaLN_modulation.1.weight", "blocks.0.adaLN_modulation.1.bias", "final_layer.linear.weight",
      "final_layer.linear.bias", "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias"};
  EXPECT_EQ(state_names(*make_diffusion_model("dit-s", kTiny, tiny_dit_overrides())), dit);
  // Shapes of a few: the null class row, patch-2 projections, learn_sigma doubling the output.
  auto model = make_diffusion_model("dit-s", kTiny, tiny_dit_overrides());
  EXPECT_EQ(model->parameter("y_embedder.embedding_table.weight").shape(), (Shape{6, 8}));
  EXPECT_EQ(model->parameter("x_embedder.proj.weight").shape(), (Shape{8, 3, 2, 2}));
  EXPECT_EQ(model->parameter("final_layer.linear.weight").shape(), (Shape{2 * 2 * 6, 8}));
  EXPECT_EQ(model->parameter("pos_embed").shape(), (Shape{1, 4, 8}));
  EXPECT_FALSE(model->parameter("pos_embed").requires_grad());
}

Tensor tiny_labels(std::vector<int64_t> ids) { return from_vector<int64_t>(ids, {static_cast<int64_t>(ids.size())}); }

TEST(DiffusionModels, ForwardShapesAndTheNoClassLabel) {
  for (const char* name : {"uvit-s", "dit-s"}) {
    const bool dit = std::string(name) == "dit-s";
    auto model = make_diffusion_model(name, kTiny, dit ? tiny_dit_overrides() : tiny_uvit_overrides());
    const Tensor x = random_tensor({3, 4, 4, 3}, 1, DType::f32);
    const Tensor t = from_doubles({0, 500, 999}, {3});
    const Tensor y = model->forward(x, t, tiny_labels({0, 4, 5}));  // 5 = no class
    EXPECT_EQ(y.shape(), (Shape{3, 4, 4, dit ? 6 : 3})) << name;
    EXPECT_EQ(model->out_channels(), dit ? 6 : 3);
    EXPECT_EQ(model->num_classes(), 5);
    EXPECT_EQ(model->input_size(), 4);
    // The null label has its own embedding: the output changes with it (DiT: once adaLN is no longer zero).
    if (dit) {
      for (const auto& [pname, p] : model->named_parameters())
        assign_in_place(p, random_tensor(p.shape(), 7, DType::f32, 0.3));
    }
    const Tensor x2 = random_tensor({2, 4, 4, 3}, 2, DType::f32), t2 = from_doubles({10, 10}, {2});
    const Tensor cond = model->forward(x2, t2, tiny_labels({2, 2}));
    const Tensor uncond = model->forward(x2, t2, tiny_labels({5, 5}));
    EXPECT_GT(ops::max(ops::abs(ops::sub(cond, uncond))).item<float>(), 1e-4) << name;
    // Per-sample independence: sample 1 of a batch equals the same sample run alone.
    const Tensor mixed = model->forward(x2, t2, tiny_labels({2, 5}));
    EXPECT_TRUE(testing::all_close(mixed.slice(0, 1, 2), uncond.slice(0, 1, 2), 1e-5, 1e-5)) << name;
  }
}

TEST(DiffusionModels, GradientsMatchFiniteDifferencesInF64) {
  InitOptions init;
  init.dtype = DType::f64;
  for (const char* name : {"uvit-s", "dit-s"}) {
    const bool dit = std::string(name) == "dit-s";
    auto model = make_diffusion_model(name, {3, 4, 5}, dit ? tiny_dit_overrides() : tiny_uvit_overrides(), init);
    // Random values everywhere, so DiT's zero-initialised adaLN and output layers pass gradients too.
    uint64_t seed = 100;
    std::vector<Tensor> inputs;
    for (const auto& [pname, p] : model->named_parameters()) {
      assign_in_place(p, random_tensor(p.shape(), seed++, DType::f64, 0.4));
      if (p.requires_grad()) inputs.push_back(p);
    }
    Tensor x = random_tensor({2, 4, 4, 3}, 3, DType::f64).set_requires_grad(true);
    inputs.push_back(x);
    const Tensor t = from_doubles({3, 700}, {2}, DType::f64);
    const Tensor labels = tiny_labels({1, 5});
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>&) { return model->forward(x, t, labels); }, inputs,
                                   {1e-6, 1e-7, 1e-5}))
        << name;
  }
}

TEST(DiffusionModels, InitialisationFollowsTheReference) {
  auto dit = make_diffusion_model("dit-s", {4, 4, 10}, {{"depth", 2}, {"hidden_size", 16}, {"num_heads", 2}});
  // adaLN-Zero: modulation and output layer start at zero, so the initial prediction is exactly zero.
  for (const auto& [name, p] : dit->named_parameters()) {
    if (name.find("adaLN_modulation") != std::string::npos || name.rfind("final_layer.linear", 0) == 0) {
      EXPECT_EQ(ops::max(ops::abs(p)).item<float>(), 0.0f) << name;
    }
  }
  const Tensor zero_out = dit->forward(random_tensor({2, 4, 4, 4}, 5, DType::f32), from_doubles({1, 2}, {2}),
                                       tiny_labels({0, 10}));
  EXPECT_EQ(ops::max(ops::abs(zero_out)).item<float>(), 0.0f);
  // The position table: token (i, j) = [sincos(j) | sincos(i)] over dim/2 each; (0, 0) is [0.., 1.., 0.., 1..].
  const std::vector<float> pos = dit->parameter("pos_embed").to_vector<float>();
  EXPECT_FLOAT_EQ(pos[0], 0.0f);    // sin(0)
  EXPECT_FLOAT_EQ(pos[4], 1.0f);    // cos(0)
  const int64_t token_01 = 1 * 16;  // (i=0, j=1): first frequency of the w half is sin(1)
  EXPECT_FLOAT_EQ(pos[token_01], static_cast<float>(std::sin(1.0)));
  EXPECT_FLOAT_EQ(pos[token_01 + 8], 0.0f);  // the h half still at 0
  // Xavier-uniform linears: qkv [48, 16] bound sqrt(6 / 64).
  const Tensor qkv = dit->parameter("blocks.0.attn.qkv.weight");
  EXPECT_LE(ops::max(ops::abs(qkv)).item<float>(), std::sqrt(6.0 / 64.0));
  EXPECT_GT(ops::max(ops::abs(qkv)).item<float>(), 0.5 * std::sqrt(6.0 / 64.0));

  auto uvit = make_diffusion_model("uvit-s", {4, 8, 10}, {{"depth", 2}, {"hidden_size", 64}, {"num_heads", 2}});
  // Truncated normal(0.02) linears and pos_embed, zero biases, unit LayerNorms.
  const Tensor fc1 = uvit->parameter("in_blocks.0.mlp.fc1.weight");
  const double std = std::sqrt(ops::mean(ops::square(fc1.to(DType::f64))).item<double>());
  EXPECT_NEAR(std, 0.02, 0.002);
  EXPECT_EQ(ops::max(ops::abs(uvit->parameter("in_blocks.0.mlp.fc1.bias"))).item<float>(), 0.0f);
  EXPECT_EQ(ops::max(ops::abs(ops::sub(uvit->parameter("norm.weight"), 1.0))).item<float>(), 0.0f);
  EXPECT_NEAR(std::sqrt(ops::mean(ops::square(uvit->parameter("pos_embed").to(DType::f64))).item<double>()), 0.02,
              0.002);
}

TEST(DiffusionModels, BadInputsGiveClearErrors) {
  for (const char* name : {"uvit-s", "dit-s"}) {
    auto model = make_diffusion_model(name, kTiny, std::string(name) == "dit-s" ? tiny_dit_overrides()
                                                                               : tiny_uvit_overrides());
    const Tensor t = from_doubles({1, 2}, {2});
    const Tensor labels = tiny_labels({0, 1});
    expect_error([&] { model->forward(random_tensor({2, 4, 4, 5}, 1, DType::f32), t, labels); },
                 {"NHWC latents [N, H, W, 3]", "[2, 4, 4, 5]"});
    expect_error([&] { model->forward(random_tensor({2, 8, 8, 3}, 1, DType::f32), t, labels); },
                 {"built for 4x4 latents", "[2, 8, 8, 3]"});
    const Tensor x = random_tensor({2, 4, 4, 3}, 1, DType::f32);
    expect_error([&] { model->forward(x, t, tiny_labels({0, 6})); }, {"label 6 is out of range [0, 5]", "no class"});
    expect_error([&] { model->forward(x, t, tiny_labels({-1, 0})); }, {"label -1"});
    expect_error([&] { model->forward(x, from_doubles({1, 2, 3}, {3}), labels); }, {"timesteps t [2]"});
    expect_error([&] { model->forward(x, t, from_doubles({0, 1}, {2})); }, {"int64 labels [2]"});
  }
}

TEST(DiffusionModels, TimestepEmbeddingIsTheSinusoid) {
  Tensor cache;
  const Tensor t = from_doubles({0.0, 3.5, 999.0}, {3});
  const Tensor emb = timestep_embedding(t, 7, DType::f64, cache);  // odd: a zero column at the end
  ASSERT_EQ(emb.shape(), (Shape{3, 7}));
  const std::vector<double> e = emb.to_vector<double>();
  for (int64_t n = 0; n < 3; ++n) {
    const double tv = std::vector<double>{0.0, 3.5, 999.0}[n];
    for (int64_t k = 0; k < 3; ++k) {
      const double f = std::exp(-std::log(10000.0) * k / 3.0);
      EXPECT_NEAR(e[n * 7 + k], std::cos(tv * f), 1e-12);
      EXPECT_NEAR(e[n * 7 + 3 + k], std::sin(tv * f), 1e-12);
    }
    EXPECT_EQ(e[n * 7 + 6], 0.0);
  }
}

}  // namespace
}  // namespace dcae::nn::diffusion
