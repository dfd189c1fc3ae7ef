// load_diffusion_weights: efficientvit's three key layouts (bare, training-checkpoint "uvit."/"dit.", Hugging Face
// "diffusion_model." beside "autoencoder.*") load into our models by name; wrong files give errors naming the keys.
#include <gtest/gtest.h>

#include "nn/diffusion/checkpoint.h"
#include "nn/diffusion/zoo.h"
#include "nn/io/safetensors.h"
#include "tests/testing/check.h"

namespace dcae::nn::diffusion {
namespace {

std::unique_ptr<Denoiser> tiny(const std::string& name, uint64_t seed) {
  Generator generator(seed);  // used during construction only
  InitOptions init;
  init.generator = &generator;
  return make_diffusion_model(name, {3, 4, 5}, {{"depth", 2}, {"hidden_size", 8}, {"num_heads", 2}}, init);
}

std::string write_with_prefix(const Module& model, const std::string& prefix, const std::string& file,
                              bool drop_one = false) {
  std::vector<NamedTensor> tensors;
  for (const auto& [name, t] : model.state())
    if (!(drop_one && name == "norm.weight")) tensors.emplace_back(prefix + name, t);
  if (!prefix.empty())  // another model in the same file, as in the Hugging Face files
    tensors.emplace_back("autoencoder.decoder.conv_in.weight", zeros({2, 2}));
  const std::string path = ::testing::TempDir() + file;
  write_safetensors(path, tensors);
  return path;
}

void expect_same_state(const Module& a, const Module& b) {
  const auto sa = a.state(), sb = b.state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i)
    EXPECT_TRUE(testing::all_close(sa[i].second, sb[i].second, 0, 0)) << sa[i].first;
}

TEST(DiffusionCheckpoint, EveryEfficientvitKeyLayoutLoads) {
  for (const auto& [name, prefix] : std::vector<std::pair<std::string, std::string>>{
           {"uvit-s", "diffusion_model."}, {"uvit-s", "uvit."}, {"dit-s", "dit."}, {"dit-s", ""}}) {
    auto source = tiny(name, 1), target = tiny(name, 2);
    load_diffusion_weights(*target, write_with_prefix(*source, prefix, "ckpt_" + name + ".safetensors"));
    expect_same_state(*source, *target);
  }
}

TEST(DiffusionCheckpoint, WrongFilesNameTheProblem) {
  auto model = tiny("uvit-s", 3);
  const std::string no_model = ::testing::TempDir() + "not_a_denoiser.safetensors";
  write_safetensors(no_model, {{"encoder.conv.weight", zeros({2})}});
  testing::expect_error([&] { load_diffusion_weights(*model, no_model); },
                        {"not_a_denoiser.safetensors", "no diffusion transformer weights", "pos_embed"});
  const std::string missing = write_with_prefix(*model, "diffusion_model.", "missing.safetensors", true);
  testing::expect_error([&] { load_diffusion_weights(*model, missing); }, {"norm.weight", "diffusion_model."});
  // A DiT file into a UViT: the key sets differ.
  const std::string dit = write_with_prefix(*tiny("dit-s", 4), "", "dit.safetensors");
  testing::expect_error([&] { load_diffusion_weights(*model, dit); }, {"x_embedder.proj.weight"});
}

}  // namespace
}  // namespace dcae::nn::diffusion
