#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "nn/dcae/model.h"
#include "tests/testing/check.h"
#include "tests/testing/tiny_dcae.h"

namespace dcae::nn::dcae_model {
namespace {

struct GoldenKey {
  std::string name;
  Shape shape;
  std::string dtype;
};

// Reads spec/diffusers-keys/<model>.tsv (copied into tests/nn/golden): key, shape "[a, b]", dtype.
std::vector<GoldenKey> read_golden(const std::string& model) {
  std::ifstream in(std::string(DCAE_SOURCE_DIR) + "/tests/nn/golden/" + model + ".tsv");
  EXPECT_TRUE(in.good()) << "missing golden key list for " << model;
  std::vector<GoldenKey> keys;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    GoldenKey key;
    std::string shape;
    std::getline(fields, key.name, '\t');
    std::getline(fields, shape, '\t');
    std::getline(fields, key.dtype, '\t');
    for (char& c : shape)
      if (c == '[' || c == ']' || c == ',') c = ' ';
    std::istringstream dims(shape);
    int64_t d;
    while (dims >> d) key.shape.push_back(d);
    keys.push_back(key);
  }
  return keys;
}

class PublishedModel : public ::testing::TestWithParam<std::string> {};

TEST_P(PublishedModel, KeysShapesAndOrderMatchDiffusers) {
  InitOptions shapes_only;
  shapes_only.random_init = false;  // the f128 model has 1.1 B parameters: no need to fill them
  AutoencoderDC model(published_config(GetParam()), shapes_only);
  const auto golden = read_golden(GetParam());
  const auto state = model.state();
  ASSERT_EQ(state.size(), golden.size());
  for (size_t i = 0; i < golden.size(); ++i) {
    EXPECT_EQ(state[i].first, golden[i].name) << "entry " << i;
    EXPECT_EQ(state[i].second.shape(), golden[i].shape) << golden[i].name;
    EXPECT_EQ(state[i].second.dtype(), golden[i].dtype == "int64" ? DType::i64 : DType::f32) << golden[i].name;
  }
}

INSTANTIATE_TEST_SUITE_P(Dcae, PublishedModel,
                         ::testing::Values("dc-ae-f32c32-in-1.0", "dc-ae-f64c128-in-1.0", "dc-ae-f128c512-in-1.0",
                                           "dc-ae-f32c32-sana-1.0"));

TEST(DcaeConfigs, ParameterCountsEqualTheSpec) {
  InitOptions shapes_only;
  shapes_only.random_init = false;
  EXPECT_EQ(AutoencoderDC(published_config("dc-ae-f32c32-in-1.0"), shapes_only).num_parameters(), 323356460);
  EXPECT_EQ(AutoencoderDC(published_config("dc-ae-f64c128-in-1.0"), shapes_only).num_parameters(), 676896140);
  EXPECT_EQ(AutoencoderDC(published_config("dc-ae-f128c512-in-1.0"), shapes_only).num_parameters(), 1120682252);
  for (const auto& name : published_config_names()) EXPECT_NO_THROW(published_config(name).validate()) << name;
  EXPECT_THROW(published_config("dc-ae-f16c4"), Error);
}

TEST(DcaeConfigs, JsonRoundTripAndDiffusersDefaults) {
  const DcaeConfig f64 = published_config("dc-ae-f64c128-in-1.0-diffusers");
  const DcaeConfig back = config_from_json(config_to_json(f64));
  EXPECT_EQ(back.decoder_norm_types, f64.decoder_norm_types);
  EXPECT_EQ(back.encoder_layers_per_block, f64.encoder_layers_per_block);
  EXPECT_DOUBLE_EQ(back.scaling_factor, 0.2889);
  // The published Sana config.json (strings broadcast, Dec-2024 fields only).
  const DcaeConfig sana = config_from_json(R"({"_class_name": "AutoencoderDC", "attention_head_dim": 32,
    "decoder_block_types": ["ResBlock","ResBlock","ResBlock","EfficientViTBlock","EfficientViTBlock","EfficientViTBlock"],
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu", "downsample_block_type": "Conv",
    "encoder_block_types": ["ResBlock","ResBlock","ResBlock","EfficientViTBlock","EfficientViTBlock","EfficientViTBlock"],
    "latent_channels": 32, "scaling_factor": 0.41407, "upsample_block_type": "interpolate"})");
  EXPECT_EQ(sana.decoder_norm_types.size(), 6u);
  EXPECT_EQ(sana.encoder_layers_per_block, (std::vector<int64_t>{2, 2, 2, 3, 3, 3}));
  EXPECT_TRUE(sana.encoder_out_shortcut);
  EXPECT_THROW(config_from_json("{\"latent_channels\": \"x\"}"), Error);
  EXPECT_THROW(config_from_json("{\"encoder_layers_per_block\": [1, 2]}"), Error);
  EXPECT_THROW(config_from_json("not json"), Error);
}

// A tiny config that exercises every path: stem with and without depth, both resampling kinds, BatchNorm,
// multi-scale attention, both attention forms (8x8 -> linear, 2x2 -> quadratic).
DcaeConfig tiny(bool sana_like) {
  return dcae::testing::tiny_dcae_config({{"ResBlock", 8, sana_like ? 1 : 0, "batch_norm", "relu"},
                                    {"EfficientViTBlock", 8, 1, "rms_norm", "silu"},
                                    {"EfficientViTBlock", 16, 1, "rms_norm", "silu", {5}}},
                                   sana_like ? "dc-ae-f32c32-sana-1.0" : "dc-ae-f32c32-in-1.0");
}

TEST(DcaeModel, TinyModelsShapesAndGradients) {
  for (bool sana_like : {false, true}) {
    Generator gen(3);
    InitOptions init{&gen, DType::f64};
    AutoencoderDC model(tiny(sana_like), init);
    model.eval();  // BatchNorm on running stats keeps the function deterministic for finite differences
    const Tensor images = testing::random_tensor({1, 8, 8, 3}, 4);
    const Tensor latent = model.encode(images);
    EXPECT_EQ(latent.shape(), (Shape{1, 2, 2, 4}));
    EXPECT_EQ(model.decode(latent).shape(), images.shape());
    // Gradcheck the whole autoencoder on a handful of parameters from every block kind (all parameters would take
    // minutes of finite differences).
    std::vector<Tensor> inputs{images.clone().set_requires_grad(true)};
    for (const auto& [name, p] : model.named_parameters())
      if (glob_match("encoder.conv_in*bias", name) || name == "encoder.down_blocks.1.0.attn.to_v.weight" ||
          name == "decoder.up_blocks.2.0.attn.to_qkv_multiscale.0.proj_out.weight" ||
          glob_match("decoder.up_blocks.0.?.norm.weight", name) || name == "decoder.conv_in.bias")
        inputs.push_back(p);
    EXPECT_EQ(inputs.size(), sana_like ? 6u : 5u);
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return model.forward(in[0]); }, inputs,
                                   {1e-6, 1e-5, 1e-4}))
        << (sana_like ? "sana-like" : "in-like");
  }
  EXPECT_THROW(AutoencoderDC(tiny(false)).encode(zeros({1, 6, 6, 3})), Error);
}

}  // namespace
}  // namespace dcae::nn::dcae_model
