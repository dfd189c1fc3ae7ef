// dcae-encode end to end: a tiny random DC-AE exported as a diffusers folder encodes a small image shard set; the
// latent shards must hold model.encode(images) * scaling_factor (and of the mirrored images for "#flip" entries).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/autograd/grad_mode.h"
#include "datasets/latent_shard.h"
#include "datasets/manifest.h"
#include "datasets/shard_format.h"
#include "nn/io/diffusers.h"
#include "ops/elementwise.h"
#include "tests/datasets/datasets_testing.h"
#include "tests/testing/tiny_dcae.h"
#include "tests/testing/tool_run.h"

namespace dcae::datasets {
namespace {

using nn::dcae_model::AutoencoderDC;
using nn::dcae_model::DcaeConfig;
using testing::ScratchDir;
using testing::synthetic_image;
namespace fs = std::filesystem;

using RunResult = dcae::testing::ToolRun;

RunResult run_encode(const std::string& arguments, const ScratchDir& scratch) {
  return dcae::testing::run_built_tool("dcae-encode", arguments, scratch / "tool.log");
}

// Compression 4 (three stages), 4 latent channels, both block kinds; the scaling factor is not 1 so that
// forgetting it shows.
DcaeConfig tiny_config() {
  DcaeConfig c = dcae::testing::tiny_dcae_config({{"ResBlock", 8, 1, "rms_norm", "relu"},
                                            {"EfficientViTBlock", 8, 1, "rms_norm", "silu"},
                                            {"EfficientViTBlock", 16, 1, "rms_norm", "silu", {5}}});
  c.scaling_factor = 0.75;
  return c;
}

// Two raw shards of 8x12 images (3 and 2 images, labels 0..4) and their manifest; returns the images in order.
std::vector<Tensor> make_image_shards(const std::string& dir) {
  fs::create_directories(dir);
  Manifest manifest;
  manifest.format_version = kShardFormatVersion;
  manifest.resolution = 8;
  manifest.crop = "dmcrop";
  manifest.storage = "raw";
  manifest.source = "synthetic";
  manifest.num_classes = 5;
  std::vector<Tensor> images;
  for (int64_t shard = 0, index = 0; shard < 2; ++shard) {
    const std::string file = "shard-0000" + std::to_string(shard) + ".h5";
    ShardAttributes attributes;
    attributes.resolution = 8;
    attributes.crop = "dmcrop";
    ShardWriter writer((fs::path(dir) / file).string(), attributes);
    for (int64_t i = 0; i < (shard == 0 ? 3 : 2); ++i, ++index) {
      images.push_back(synthetic_image(8, 12, static_cast<uint64_t>(index + 1)));
      writer.append(images.back(), index, "img" + std::to_string(index) + ".png");
    }
    writer.close();
    manifest.shards.push_back(describe_shard(dir, file, writer.count()));
  }
  write_manifest(dir, manifest);
  write_classes(dir, {"a", "b", "c", "d", "e"});
  return images;
}

// The reference: encode one u8 image [H, W, 3] (mirrored when asked) at batch 1, times the scaling factor.
std::vector<float> expected_latent(AutoencoderDC& model, const Tensor& image, bool mirror, double scale) {
  const int64_t h = image.size(0), w = image.size(1);
  const auto pixels = image.to_vector<uint8_t>();
  std::vector<float> input(pixels.size());
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        input[(y * w + x) * 3 + c] = pixels[(y * w + (mirror ? w - 1 - x : x)) * 3 + c] / 127.5f - 1.0f;
  autograd::NoGradGuard no_grad;
  const DType dtype = model.parameters().front().dtype();  // the input in the model's dtype, as dcae-encode does
  const Tensor latent = model.encode(from_vector(input, {1, h, w, 3}).to(dtype));
  return ops::mul(latent.to(DType::f32), scale).to_vector<float>();
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(double(a[i]) - b[i]));
  return worst;
}

TEST(EncodeTool, LatentsAreTheScaledEncodingsOfEveryImageAndItsMirror) {
  ScratchDir scratch("encode");
  ASSERT_TRUE(fs::exists(dcae::testing::built_tool_path("dcae-encode"))) << dcae::testing::built_tool_path("dcae-encode") << " was not built (it is a dependency of this test binary)";
  const std::string shards = scratch / "shards", model_dir = scratch / "model", out = scratch / "latents";
  const std::vector<Tensor> images = make_image_shards(shards);
  Generator gen(5);
  nn::InitOptions init;
  init.generator = &gen;
  AutoencoderDC model(tiny_config(), init);
  model.eval();
  nn::save_diffusers_folder(model, model_dir);

  const std::string arguments = "--model-dir '" + model_dir + "' --shards '" + shards + "' --output '" + out + "'";
  const RunResult run = run_encode(arguments + " --batch 2 --flip", scratch);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("5/5 images"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("wrote 10 latents in 2 shards"), std::string::npos) << run.output;

  const Manifest manifest = read_manifest(out);
  ASSERT_EQ(manifest.shards.size(), 2u);
  EXPECT_EQ(manifest.total(), 10);
  EXPECT_EQ(manifest.storage, "latents");
  EXPECT_EQ(manifest.num_classes, 5);
  EXPECT_EQ(read_classes(out).size(), 5u);
  int64_t index = 0;
  for (const ShardEntry& entry : manifest.shards) {
    EXPECT_EQ(check_shard_file(out, entry), "");
    const LatentShardReader reader((fs::path(out) / entry.file).string());
    EXPECT_EQ(reader.size(), entry.count);
    EXPECT_EQ(reader.latent_shape(), (Shape{2, 3, 4}));
    EXPECT_EQ(reader.attributes().scaling_factor, 0.75);
    EXPECT_TRUE(reader.attributes().flipped);
    EXPECT_EQ(reader.attributes().model, model_dir);
    EXPECT_EQ(reader.attributes().source_shard, (fs::path(shards) / entry.file).string());
    for (int64_t i = 0; i < reader.size(); i += 2, ++index) {
      const std::string name = "img" + std::to_string(index) + ".png";
      EXPECT_EQ(reader.name(i), name);
      EXPECT_EQ(reader.name(i + 1), name + "#flip");
      EXPECT_EQ(reader.label(i), index);
      EXPECT_EQ(reader.label(i + 1), index);
      const auto plain = expected_latent(model, images[index], false, 0.75);
      const auto mirrored = expected_latent(model, images[index], true, 0.75);
      EXPECT_LT(max_abs_difference(reader.latent(i).to_vector<float>(), plain), 1e-5) << name;
      EXPECT_LT(max_abs_difference(reader.latent(i + 1).to_vector<float>(), mirrored), 1e-5) << name << "#flip";
      EXPECT_GT(max_abs_difference(plain, mirrored), 1e-3) << "the mirror must change the latent";
    }
  }
  EXPECT_EQ(index, 5);

  // A second run refuses to overwrite; --overwrite without --flip, a given scaling factor and bf16 replaces it.
  const RunResult refused = run_encode(arguments, scratch);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("refusing to overwrite"), std::string::npos) << refused.output;
  const RunResult again = run_encode(arguments + " --overwrite --scaling-factor 2 --dtype bf16 --batch 5", scratch);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(read_manifest(out).total(), 5);
  const LatentShardReader second((fs::path(out) / "shard-00001.h5").string());
  ASSERT_EQ(second.size(), 2);
  EXPECT_FALSE(second.attributes().flipped);
  EXPECT_EQ(second.attributes().scaling_factor, 2.0);
  EXPECT_EQ(second.name(1), "img4.png");
  // --dtype bf16 loads the weights as bf16 and computes in bf16: the same as that model in process (batch 1 here,
  // so up to a bf16 rounding of the output), and not the f32 result.
  nn::DiffusersLoadOptions bf16_load;
  bf16_load.dtype = DType::bf16;
  const auto bf16_model = nn::load_diffusers_folder(model_dir, bf16_load);
  bf16_model->eval();
  const auto f32_reference = expected_latent(model, images[4], false, 2.0);
  const auto bf16_reference = expected_latent(*bf16_model, images[4], false, 2.0);
  double scale = 0;
  for (float v : f32_reference) scale = std::max(scale, double(std::abs(v)));
  const std::vector<float> stored = second.latent(1).to_vector<float>();
  EXPECT_LT(max_abs_difference(stored, bf16_reference), 1e-2 * scale);
  EXPECT_GT(max_abs_difference(stored, f32_reference), 1e-3 * scale) << "bf16 compute should not match f32";
}

TEST(EncodeTool, BadInputsAreOneLineErrors) {
  ScratchDir scratch("encode_errors");
  const std::string shards = scratch / "shards", model_dir = scratch / "model";
  make_image_shards(shards);
  DcaeConfig config = tiny_config();
  config.encoder_block_out_channels = config.decoder_block_out_channels = {8, 8, 8, 16};  // compression 8
  config.encoder_block_types = config.decoder_block_types = {"ResBlock", "ResBlock", "EfficientViTBlock",
                                                             "EfficientViTBlock"};
  config.encoder_layers_per_block = config.decoder_layers_per_block = {1, 1, 1, 1};
  config.encoder_qkv_multiscales = config.decoder_qkv_multiscales = {{}, {}, {}, {5}};
  config.decoder_norm_types = {"rms_norm", "rms_norm", "rms_norm", "rms_norm"};
  config.decoder_act_fns = {"relu", "relu", "silu", "silu"};
  nn::save_diffusers_folder(AutoencoderDC(config), model_dir);
  const std::string base = "--shards '" + shards + "' --output '" + (scratch / "out") + "'";

  RunResult run = run_encode(base + " --model-dir '" + model_dir + "'", scratch);  // 8x12 images, compression 8
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("do not divide by the model's compression factor 8"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(fs::path(scratch / "out") / "shard-00000.h5.partial")) << "partial file left behind";

  run = run_encode(base + " --model-dir '" + (scratch / "nowhere") + "'", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("nowhere' does not exist"), std::string::npos) << run.output;

  run = run_encode("--model-dir '" + model_dir + "' --shards '" + (scratch / "none") + "' --output x", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("no manifest"), std::string::npos) << run.output;

  run = run_encode(base + " --model-dir '" + model_dir + "' --dtype f16", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("--dtype must be f32 or bf16, got 'f16'"), std::string::npos) << run.output;

  run = run_encode(base + " --model-dir '" + model_dir + "' --batch 0", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("--batch must be positive"), std::string::npos) << run.output;

  run = run_encode(base + " --model-dir '" + model_dir + "' --cuda-graph", scratch);  // --device defaults to cpu
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("--cuda-graph needs --device cuda"), std::string::npos) << run.output;

  std::ofstream(fs::path(shards) / "shard-00001.h5", std::ios::app) << "tampered";
  run = run_encode(base + " --model-dir '" + model_dir + "'", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("shard-00001.h5' has"), std::string::npos) << run.output;

  run = run_encode("--shards x --output y", scratch);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("model-dir"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace dcae::datasets
