// The pieces a job is built from: image sources (synthetic, folder, shards: determinism, hold-out, resume),
// model configs and init weights, the shipped recipes, and the errors a bad recipe meets before any work.
#include <gtest/gtest.h>

#include <filesystem>

#include "datasets/png.h"
#include "datasets/shard_format.h"
#include "nn/dcae/model.h"
#include "nn/io/safetensors.h"
#include "trainer/image_metrics.h"
#include "tests/trainer/job_testing.h"
#include "trainer/registries.h"

namespace dcae::trainer {
namespace {

using testing::bit_identical;
using testing::error_of;
using testing::ScratchDir;
using testing::write_file;

// Draws `n` batches, then checks a fresh source restored at the position after the first batch repeats the rest.
void expect_resumable(const std::function<std::unique_ptr<ImageSource>()>& make, int n) {
  auto source = make();
  std::vector<Tensor> batches;
  nlohmann::json after_first;
  for (int i = 0; i < n; ++i) {
    batches.push_back(source->next());
    if (i == 0) after_first = source->position();
  }
  auto resumed = make();
  resumed->restore(after_first);
  for (int i = 1; i < n; ++i) EXPECT_TRUE(bit_identical(resumed->next(), batches[i])) << "batch " << i;
  EXPECT_FALSE(bit_identical(batches[0], batches[1]));
}

// True when no image of `eval` equals any image drawn from `source` in `batches` batches.
bool disjoint(ImageSource& source, const Tensor& eval, int batches) {
  for (int b = 0; b < batches; ++b) {
    const Tensor batch = source.next();
    for (int64_t i = 0; i < batch.size(0); ++i)
      for (int64_t j = 0; j < eval.size(0); ++j)
        if (bit_identical(batch.select(0, i).contiguous(), eval.select(0, j).contiguous())) return false;
  }
  return true;
}

TEST(JobData, SyntheticImagesAreDeterministicSmoothAndHeldOut) {
  ScratchDir dir;
  const Recipe recipe = testing::tiny_recipe(dir, {"data.synthetic_images=10"});
  DataSpec spec;
  spec.recipe = &recipe;
  spec.batch_size = 3;
  spec.resolution = 16;
  spec.eval_images = 4;
  spec.seed = 7;
  expect_resumable([&] { return make_synthetic_source(spec); }, 5);  // crosses an epoch (3 batches each)
  auto source = make_synthetic_source(spec);
  const Tensor eval = source->eval_images();
  EXPECT_EQ(eval.shape(), Shape({4, 16, 16, 3}));
  EXPECT_TRUE(bit_identical(eval, source->eval_images()));
  EXPECT_TRUE(disjoint(*source, eval, 6));
  const std::vector<float> px = synthetic_image(7, 3, 16).to_vector<float>();
  for (float v : px) ASSERT_TRUE(v >= -1.0f && v <= 1.0f);
  EXPECT_TRUE(bit_identical(synthetic_image(7, 3, 16), synthetic_image(7, 3, 16)));
  EXPECT_FALSE(bit_identical(synthetic_image(7, 3, 16), synthetic_image(7, 4, 16)));
  // Two ranks see disjoint halves of each epoch.
  DataSpec rank0 = spec, rank1 = spec;
  rank0.world_size = rank1.world_size = 2;
  rank1.rank = 1;
  rank0.batch_size = rank1.batch_size = 5;
  const Tensor a = make_synthetic_source(rank0)->next(), b = make_synthetic_source(rank1)->next();
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 5; ++j) EXPECT_FALSE(bit_identical(a.select(0, i).contiguous(), b.select(0, j).contiguous()));
}

TEST(JobData, FolderSourceHoldsOutTheLastFilesAndResumes) {
  ScratchDir dir;
  const std::string folder = dir.file("images");
  std::filesystem::create_directories(folder);
  for (int i = 0; i < 6; ++i)  // 40x24 pictures: scaled to short side 16, then random 16x16 crops
    datasets::write_png(folder + "/img" + std::to_string(i) + ".png",
                        synthetic_image(100 + i, 0, 40).narrow(0, 0, 24).contiguous());
  write_file(folder + "/notes.txt", "not an image\n");
  const Recipe recipe = testing::tiny_recipe(dir, {"data.synthetic=false", "data.folder=\"" + folder + "\""});
  EXPECT_EQ(resolve_data_source(recipe), "folder");
  DataSpec spec;
  spec.recipe = &recipe;
  spec.batch_size = 2;
  spec.resolution = 16;
  spec.eval_images = 2;
  expect_resumable([&] { return make_folder_source(spec); }, 4);
  auto source = make_folder_source(spec);
  EXPECT_NE(source->summary().find("4 training images, 2 held out"), std::string::npos) << source->summary();
  const Tensor eval = source->eval_images();
  EXPECT_EQ(eval.shape(), Shape({2, 16, 16, 3}));
  EXPECT_TRUE(disjoint(*source, eval, 6));
  spec.eval_images = 6;  // at least one training image stays: the held-out count is capped
  spec.batch_size = 1;
  EXPECT_NE(make_folder_source(spec)->summary().find("1 training images, 5 held out"), std::string::npos);
  const Recipe empty_folder = testing::tiny_recipe(dir, {"data.synthetic=false", "data.folder=\"" + dir.file("none") + "\""},
                                                   "", "e.toml");
  spec.recipe = &empty_folder;
  EXPECT_NE(error_of([&] { make_folder_source(spec); }).find("is not a folder"), std::string::npos);
}

void write_shard(const std::string& path, int images, uint64_t seed) {
  datasets::ShardAttributes attributes;
  attributes.resolution = 20;
  attributes.crop = "dmcrop";
  datasets::ShardWriter writer(path, attributes);
  for (int i = 0; i < images; ++i) writer.append(to_uint8_images(synthetic_image(seed, i, 20).unsqueeze(0)).select(0, 0),
                                                 -1, "img" + std::to_string(i));
  writer.close();
}

TEST(JobData, ShardSourceHoldsOutTheLastShardOrUsesEvalShards) {
  ScratchDir dir;
  write_shard(dir.file("shard-00000.h5"), 5, 1);
  write_shard(dir.file("shard-00001.h5"), 3, 2);
  const Recipe recipe = testing::tiny_recipe(dir, {"data.synthetic=false", "data.workers=1",
                                                   "data.shards=\"" + dir.file("shard-*.h5") + "\""});
  EXPECT_EQ(resolve_data_source(recipe), "shards");
  DataSpec spec;
  spec.recipe = &recipe;
  spec.batch_size = 2;
  spec.resolution = 16;
  spec.eval_images = 8;
  expect_resumable([&] { return make_shard_source(spec); }, 4);
  auto source = make_shard_source(spec);
  EXPECT_NE(source->summary().find("5 training images in 1 shard(s)"), std::string::npos) << source->summary();
  const Tensor eval = source->eval_images();
  EXPECT_EQ(eval.shape(), Shape({3, 16, 16, 3}));  // the whole held-out shard, fewer than eval.images
  // A single shard without eval_shards cannot hold anything out.
  const Recipe single = testing::tiny_recipe(dir, {"data.synthetic=false", "data.shards=\"" + dir.file("shard-00000.h5") + "\""},
                                             "", "single.toml");
  spec.recipe = &single;
  EXPECT_NE(error_of([&] { make_shard_source(spec); }).find("give data.eval_shards"), std::string::npos);
  const Recipe with_eval = testing::tiny_recipe(
      dir, {"data.synthetic=false", "data.shards=\"" + dir.file("shard-00000.h5") + "\"",
            "data.eval_shards=\"" + dir.file("shard-00001.h5") + "\""}, "", "eval.toml");
  spec.recipe = &with_eval;
  EXPECT_EQ(make_shard_source(spec)->eval_images().size(0), 3);
  const Recipe nothing = testing::tiny_recipe(dir, {"data.synthetic=false", "data.shards=\"" + dir.file("x-*.h5") + "\""},
                                              "", "none.toml");
  spec.recipe = &nothing;
  EXPECT_NE(error_of([&] { make_shard_source(spec); }).find("matches no file"), std::string::npos);
}

TEST(JobModel, ConfigOverridesAreCheckedByName) {
  const auto config = dcae_config_with_overrides("dc-ae-f32c32-in-1.0", {{"latent_channels", 64}});
  EXPECT_EQ(config.latent_channels, 64);
  EXPECT_EQ(config.encoder_block_out_channels.back(), 1024);
  std::string m = error_of([] { dcae_config_with_overrides("dc-ae-f32c32-in-1.0", {{"latent_chanels", 8}}); });
  EXPECT_NE(m.find("unknown DC-AE config field(s) latent_chanels"), std::string::npos) << m;
  m = error_of([] { dcae_config_with_overrides("dc-ae-f32c32-in-1.0", {{"encoder_block_out_channels", {64, 128}}}); });
  EXPECT_NE(m.find("encoder_block_types has 6 entries, expected 2"), std::string::npos) << m;
  m = error_of([] { registries().models.create("dc-ae-f48", ModelSpec{}); });
  EXPECT_NE(m.find("unknown model 'dc-ae-f48'; known: dc-ae-custom"), std::string::npos) << m;
}

TEST(JobModel, InitWeightsRejectOtherArchitecturesNamingTheTensor) {
  ScratchDir dir;
  const auto small = dcae_config_with_overrides("dc-ae-custom", nlohmann::json::parse(R"({
    "latent_channels": 4, "attention_head_dim": 8, "encoder_block_out_channels": [8, 16],
    "decoder_block_out_channels": [8, 16], "encoder_block_types": "ResBlock", "decoder_block_types": "ResBlock",
    "encoder_layers_per_block": [1, 1], "decoder_layers_per_block": [1, 1], "encoder_qkv_multiscales": [[], []],
    "decoder_qkv_multiscales": [[], []]})"));
  TrainModel model = make_dcae_train_model(small, "small", {});
  EXPECT_EQ(model.last_layer, "decoder.conv_out.weight");
  nn::write_safetensors(dir.file("small.safetensors"), model.module->state());
  auto wider = small;
  wider.encoder_block_out_channels = wider.decoder_block_out_channels = {8, 32};
  TrainModel other = make_dcae_train_model(wider, "wider", {});
  std::string m = error_of([&] { load_initial_weights(*other.module, dir.file("small.safetensors")); });
  EXPECT_NE(m.find("encoder.down_blocks.0.1.conv.weight' has shape [4, 8, 3, 3], the model expects [8, 8, 3, 3]"), std::string::npos) << m;
  // A diffusers folder whose config.json describes another model.
  std::filesystem::create_directories(dir.file("diffusers"));
  std::filesystem::copy_file(dir.file("small.safetensors"), dir.file("diffusers/diffusion_pytorch_model.safetensors"));
  write_file(dir.file("diffusers/config.json"), nn::dcae_model::config_to_json(small));
  EXPECT_EQ(load_initial_weights(*model.module, dir.file("diffusers"), &small),
            dir.file("diffusers/diffusion_pytorch_model.safetensors"));
  m = error_of([&] { load_initial_weights(*other.module, dir.file("diffusers"), &wider); });
  EXPECT_NE(m.find("describes another model"), std::string::npos) << m;
  m = error_of([&] { load_initial_weights(*model.module, dir.file("nowhere")); });
  EXPECT_NE(m.find("nowhere' not found"), std::string::npos) << m;
}

// Every shipped recipe validates; its trainable globs match the model (published models built with narrow widths:
// parameter names do not depend on widths) and select what the phase says.
TEST(Recipes, ShippedRecipesValidateAndTheirTrainableSetsMatchThePhase) {
  const std::string root = std::string(DCAE_SOURCE_DIR) + "/recipes/";
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    const std::string file = entry.path().filename().string();
    if (entry.path().extension() != ".toml") continue;
    SCOPED_TRACE(file);
    const Recipe recipe = load_job_recipe(entry.path().string());
    if (recipe.get<std::string>("job") == "diffusion") continue;  // tests/trainer/diffusion_job_test.cpp checks those
    auto config = dcae_config_with_overrides(recipe.get<std::string>("model.name"), recipe.at("model.config"));
    if (file.rfind("dcae_", 0) == 0) {
      for (auto& w : config.encoder_block_out_channels) w = 32;
      for (auto& w : config.decoder_block_out_channels) w = 32;
      config.latent_channels = 32;
    }
    nn::InitOptions init;
    init.random_init = false;
    TrainModel model = make_dcae_train_model(config, file, init);
    model.module->train_only(recipe.get<std::vector<std::string>>("train.trainable"));
    const int64_t stages = config.num_stages();
    bool encoder_head = false, encoder_body = false, decoder_in = false, decoder_head = false, decoder_mid = false;
    for (const auto& [name, t] : model.module->named_parameters()) {
      if (!t.requires_grad()) continue;
      const std::string last_encoder = "encoder.down_blocks." + std::to_string(stages - 1) + ".";
      encoder_head |= name.rfind(last_encoder, 0) == 0 || name.rfind("encoder.conv_out.", 0) == 0;
      encoder_body |= name.rfind("encoder.", 0) == 0 && name.rfind(last_encoder, 0) != 0 && name.rfind("encoder.conv_out.", 0) != 0;
      decoder_in |= name.rfind("decoder.conv_in.", 0) == 0;
      decoder_head |= name.rfind("decoder.conv_out.", 0) == 0;
      decoder_mid |= name.rfind("decoder.up_blocks." + std::to_string(stages - 2) + ".", 0) == 0;
    }
    const std::string phase = file.substr(file.size() - 6, 1);
    if (phase == "2") {  // the layers around the latent only
      EXPECT_TRUE(encoder_head && decoder_in);
      EXPECT_FALSE(encoder_body || decoder_head || decoder_mid);
      EXPECT_EQ(recipe.get<double>("loss.gan"), 0.0);
    } else if (phase == "3") {  // the decoder head only, with a GAN
      EXPECT_TRUE(decoder_head);
      EXPECT_FALSE(encoder_head || encoder_body || decoder_in || decoder_mid);
      EXPECT_GT(recipe.get<double>("loss.gan"), 0.0);
      EXPECT_EQ(recipe.get<std::vector<double>>("optim.betas"), (std::vector<double>{0.5, 0.9}));
    } else {  // phase 1 and the default: everything
      EXPECT_TRUE(encoder_head && encoder_body && decoder_in && decoder_head && decoder_mid);
    }
    if (file.rfind("dcae_", 0) == 0) {
      const double lr = phase == "1" ? 6.4e-5 : phase == "2" ? 1.6e-5 : 5.4e-5;
      EXPECT_EQ(recipe.get<double>("optim.lr"), lr);
      EXPECT_GT(recipe.get<double>("loss.lpips"), 0.0);
    }
    ++checked;
  }
  EXPECT_EQ(checked, 13);
}

TEST(JobErrors, BadRecipesStopBeforeAnyWork) {
  ScratchDir dir;
  std::string m = error_of([&] { DcaeJob job(testing::tiny_recipe(dir, {"train.device=\"cuda\""})); });
  if (!cuda_available()) {
    EXPECT_NE(m.find("no CUDA backend or no GPU"), std::string::npos) << m;
  }
  m = error_of([&] { testing::tiny_recipe(dir, {"loss.lpips=0.5"}, "", "b.toml"); });
  EXPECT_NE(m.find("needs loss.lpips_weights"), std::string::npos) << m;
  m = error_of([&] { DcaeJob job(testing::tiny_recipe(dir, {"train.trainable=[\"decoder.conv_in.*\"]"},
                                                      "[loss]\ngan = 0.5\nadaptive_gan_weight = true\n", "c.toml")); });
  EXPECT_NE(m.find("needs the decoder's last layer 'decoder.conv_out.weight' to be trainable"), std::string::npos) << m;
  m = error_of([&] { DcaeJob job(testing::tiny_recipe(dir, {"train.trainable=[\"decoder.conv_inn.*\"]"}, "", "d.toml")); });
  EXPECT_NE(m.find("decoder.conv_inn.*"), std::string::npos) << m;
  m = error_of([&] { DcaeJob job(testing::tiny_recipe(dir, {}, "[loss]\nl1 = 0.0\n", "e.toml")); });
  EXPECT_NE(m.find("every loss weight is 0"), std::string::npos) << m;
  m = error_of([&] { testing::tiny_recipe(dir, {"data.synthetic=false"}, "", "f.toml"); });
  EXPECT_NE(m.find("data.shards is required"), std::string::npos) << m;
  m = error_of([&] { testing::tiny_recipe(dir, {}, "[loss]\ndisc_norm = \"group\"\n", "g.toml"); });
  EXPECT_NE(m.find("loss.disc_norm"), std::string::npos) << m;
}

}  // namespace
}  // namespace dcae::trainer
