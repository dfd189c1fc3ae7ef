// Checkpoint interop: diffusers folders (round trip, dtypes, variants, mismatch errors) and the original efficientvit
// naming (renames, qkv split, projection squeeze, family detection).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "core/autograd/grad_mode.h"
#include "nn/io/diffusers.h"
#include "nn/io/efficientvit.h"
#include "tests/testing/check.h"
#include "tests/testing/tiny_dcae.h"

namespace dcae::nn {
namespace {

namespace fs = std::filesystem;
using dcae_model::AutoencoderDC;
using dcae_model::DcaeConfig;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("dcae_interop_" + std::to_string(::getpid()) + "_" + name)).string();
}

// Tiny configurations covering the stem with and without depth, both resampling kinds, BatchNorm stages and a
// multi-scale attention stage.
DcaeConfig tiny(bool sana_like) {
  DcaeConfig c = dcae::testing::tiny_dcae_config({{"ResBlock", 8, sana_like ? 1 : 0, "batch_norm", "relu"},
                                            {"ResBlock", 8, 1, "batch_norm", "relu"},
                                            {"EfficientViTBlock", 8, 1, "rms_norm", "silu"},
                                            {"EfficientViTBlock", 16, 1, "rms_norm", "silu", {5}}},
                                           sana_like ? "dc-ae-f32c32-sana-1.0" : "dc-ae-f32c32-in-1.0");
  c.scaling_factor = 0.5;
  return c;
}

// A model whose every float tensor (norm affines and BatchNorm statistics included) is random, so a load that
// skipped or swapped anything shows.
std::unique_ptr<AutoencoderDC> random_model(const DcaeConfig& config, uint64_t seed) {
  auto model = std::make_unique<AutoencoderDC>(config);
  for (const auto& [name, t] : model->state()) {
    ++seed;
    if (!is_floating(t.dtype())) {
      assign_in_place(t, full({}, 7, DType::i64));
    } else if (name.find("running_var") != std::string::npos) {
      assign_in_place(t, testing::random_uniform(t.shape(), seed, 0.5, 1.5, DType::f32));
    } else {
      assign_in_place(t, testing::random_tensor(t.shape(), seed, DType::f32, 0.3));
    }
  }
  return model;
}

void expect_same_state(const Module& actual, const Module& expected, DType stored = DType::f32) {
  const auto a = actual.state(), e = expected.state();
  ASSERT_EQ(a.size(), e.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, e[i].first);
    EXPECT_EQ(a[i].second.dtype(), e[i].second.dtype()) << e[i].first;
    const Tensor want = is_floating(e[i].second.dtype()) ? e[i].second.to(stored).to(e[i].second.dtype()) : e[i].second;
    EXPECT_EQ(a[i].second.to_vector<double>(), want.to_vector<double>()) << e[i].first;
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DiffusersFolder, SaveLoadRoundTripIsBitExact) {
  for (bool sana_like : {false, true}) {
    const auto model = random_model(tiny(sana_like), sana_like ? 100 : 200);
    const std::string dir = temp_path(sana_like ? "sana" : "in");
    save_diffusers_folder(*model, dir);
    EXPECT_TRUE(fs::exists(fs::path(dir) / "config.json"));
    const auto loaded = load_diffusers_folder(dir);
    EXPECT_EQ(dcae_model::config_to_json(loaded->config()), dcae_model::config_to_json(model->config()));
    expect_same_state(*loaded, *model);
    EXPECT_FALSE(loaded->is_training());  // like from_pretrained
    // Every state key is in the file, num_batches_tracked as an I64 scalar.
    SafetensorsFile file((fs::path(dir) / "diffusion_pytorch_model.safetensors").string());
    EXPECT_EQ(file.names().size(), model->state().size());
    EXPECT_EQ(file.metadata().at("format"), "pt");
    if (!sana_like) {
      const auto& counter = file.entry("decoder.up_blocks.1.1.norm.num_batches_tracked");
      EXPECT_EQ(counter.dtype, DType::i64);
      EXPECT_TRUE(counter.shape.empty());
    }
    // Same function, too.
    model->eval();
    autograd::NoGradGuard no_grad;
    const Tensor images = testing::random_tensor({1, 8, 8, 3}, 5, DType::f32);
    EXPECT_EQ(loaded->decode(loaded->encode(images)).to_vector<float>(),
              model->decode(model->encode(images)).to_vector<float>());
    fs::remove_all(dir);
  }
}

TEST(DiffusersFolder, SavingReplacesAnExistingFolderAtomically) {
  const std::string dir = temp_path("replace");
  fs::create_directories(dir);
  std::ofstream(fs::path(dir) / "stale.txt") << "old";
  const auto model = random_model(tiny(false), 300);
  save_diffusers_folder(*model, dir + "/");  // a trailing slash names the same folder
  EXPECT_FALSE(fs::exists(fs::path(dir) / "stale.txt"));
  expect_same_state(*load_diffusers_folder(dir), *model);
  for (const auto& entry : fs::directory_iterator(fs::path(dir).parent_path()))
    EXPECT_EQ(entry.path().string().find(dir + ".tmp"), std::string::npos) << "left behind " << entry.path();
  fs::remove_all(dir);
}

TEST(DiffusersFolder, ReducedPrecisionFilesLoadIntoF32Models) {
  const auto model = random_model(tiny(false), 400);
  const std::string dir = temp_path("bf16");
  save_diffusers_folder(*model, dir, DType::bf16);
  SafetensorsFile file((fs::path(dir) / "diffusion_pytorch_model.safetensors").string());
  EXPECT_EQ(file.entry("encoder.conv_out.weight").dtype, DType::bf16);
  EXPECT_EQ(file.entry("decoder.up_blocks.1.1.norm.num_batches_tracked").dtype, DType::i64);
  const auto loaded = load_diffusers_folder(dir);
  EXPECT_EQ(loaded->encoder().named_parameters()[0].second.dtype(), DType::f32);
  expect_same_state(*loaded, *model, DType::bf16);  // exactly the bf16-rounded weights, as f32
  fs::remove_all(dir);

  // The fp16 variant file name, loaded on request, also into a bf16 model.
  save_diffusers_folder(*model, dir, DType::f16, "fp16");
  EXPECT_TRUE(fs::exists(fs::path(dir) / "diffusion_pytorch_model.fp16.safetensors"));
  const std::string message = error_of([&] { load_diffusers_folder(dir); });
  EXPECT_NE(message.find("diffusion_pytorch_model.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("diffusion_pytorch_model.fp16.safetensors"), std::string::npos) << message;
  expect_same_state(*load_diffusers_folder(dir, {"fp16", DType::f32}), *model, DType::f16);
  const auto as_bf16 = load_diffusers_folder(dir, {"fp16", DType::bf16});
  EXPECT_EQ(as_bf16->parameter("decoder.conv_in.weight").dtype(), DType::bf16);
  EXPECT_EQ(as_bf16->parameter("decoder.conv_in.weight").to_vector<float>(),
            model->parameter("decoder.conv_in.weight").to(DType::f16).to(DType::bf16).to_vector<float>());
  fs::remove_all(dir);
}

TEST(DiffusersFolder, MismatchedCheckpointsAreRejectedListingEveryName) {
  const auto source = random_model(tiny(false), 500);
  auto state = source->state();
  // Drop two keys (and a BatchNorm counter, which is tolerated), add two, reshape one.
  std::vector<NamedTensor> edited;
  for (const auto& [name, t] : state) {
    if (name == "encoder.conv_out.bias" || name == "decoder.norm_out.weight" ||
        name == "decoder.up_blocks.1.1.norm.num_batches_tracked")
      continue;
    edited.emplace_back(name, name == "decoder.conv_in.weight" ? testing::random_tensor({16, 4, 1, 1}, 1, DType::f32) : t);
  }
  edited.emplace_back("decoder.extra.weight", zeros({2}));
  edited.emplace_back("encoder.down_blocks.9.0.conv1.bias", zeros({2}));
  const std::string path = temp_path("edited.safetensors");
  write_safetensors(path, edited);
  auto target = random_model(tiny(false), 600);
  const auto before = target->parameter("encoder.conv_in.conv.weight").to_vector<float>();
  SafetensorsFile file(path);
  const std::string message = error_of([&] { load_state(*target, file); });
  for (const char* part : {"missing keys [encoder.conv_out.bias, decoder.norm_out.weight]",
                           "unexpected keys [decoder.extra.weight, encoder.down_blocks.9.0.conv1.bias]",
                           "decoder.conv_in.weight (checkpoint [16, 4, 1, 1], model [16, 4, 3, 3])", path.c_str()})
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  EXPECT_EQ(message.find("num_batches_tracked"), std::string::npos) << message;
  // Nothing was written before the check failed.
  EXPECT_EQ(target->parameter("encoder.conv_in.conv.weight").to_vector<float>(), before);

  // A float where the model has an integer counter.
  std::vector<NamedTensor> wrong_kind = state;
  for (auto& [name, t] : wrong_kind)
    if (name == "decoder.up_blocks.1.1.norm.num_batches_tracked") t = zeros({});
  write_safetensors(path, wrong_kind);
  SafetensorsFile kind_file(path);
  const std::string kind_message = error_of([&] { load_state(*target, kind_file); });
  EXPECT_NE(kind_message.find("decoder.up_blocks.1.1.norm.num_batches_tracked (checkpoint f32, model i64)"),
            std::string::npos)
      << kind_message;
  fs::remove(path);
}

TEST(DiffusersFolder, MissingPiecesAreNamed) {
  const std::string dir = temp_path("broken");
  EXPECT_NE(error_of([&] { load_diffusers_folder(dir); }).find("does not exist"), std::string::npos);
  fs::create_directories(dir);
  EXPECT_NE(error_of([&] { load_diffusers_folder(dir); }).find("no config.json"), std::string::npos);
  std::ofstream(fs::path(dir) / "config.json") << "{\"latent_channels\": 4, \"encoder_block_out_channels\": [8]}";
  EXPECT_NE(error_of([&] { load_diffusers_folder(dir); }).find("no .safetensors file at all"), std::string::npos);
  std::ofstream(fs::path(dir) / "diffusion_pytorch_model.safetensors.index.json") << "{}";
  EXPECT_NE(error_of([&] { load_diffusers_folder(dir); }).find("sharded checkpoint"), std::string::npos);
  fs::remove(fs::path(dir) / "diffusion_pytorch_model.safetensors.index.json");
  write_safetensors((fs::path(dir) / "diffusion_pytorch_model.safetensors").string(), {{"x", zeros({1})}});
  const std::string message = error_of([&] { load_diffusers_folder(dir); });
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;  // 1 stage vs 6-entry default lists
  fs::remove_all(dir);
}

// --- original efficientvit naming --------------------------------------------------------------------------------

// The original name of a diffusers key, written from the efficientvit module tree (spec dcae-model.md §8), i.e.
// the inverse direction of the importer, independently.
std::string original_name(const std::string& key, const DcaeConfig& c) {
  const bool conv_down = c.downsample_block_type != "pixel_unshuffle";
  static const std::regex stage(R"(^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(\d+)\.(.*)$)");
  std::smatch m;
  if (std::regex_match(key, m, stage)) {
    const std::string prefix = m[1].str() + ".stages." + m[3].str() + ".op_list." + m[4].str() + ".";
    const std::string part = m[5];
    static const std::vector<std::pair<std::string, std::string>> block_parts = {
        {"conv1.", "main.conv1.conv."},
        {"conv2.", "main.conv2.conv."},
        {"norm.", "main.conv2.norm."},
        {"attn.norm_out.", "context_module.main.proj.norm."},
        {"conv_out.conv_inverted.", "local_module.main.inverted_conv.conv."},
        {"conv_out.conv_depth.", "local_module.main.depth_conv.conv."},
        {"conv_out.conv_point.", "local_module.main.point_conv.conv."},
        {"conv_out.norm.", "local_module.main.point_conv.norm."}};
    for (const auto& [from, to] : block_parts)
      if (part.rfind(from, 0) == 0) return prefix + to + part.substr(from.size());
    static const std::regex branch(R"(^attn\.to_qkv_multiscale\.(\d+)\.proj_(in|out)\.weight$)");
    std::smatch b;
    if (std::regex_match(part, b, branch))
      return prefix + "context_module.main.aggreg." + b[1].str() + (b[2] == "in" ? ".0" : ".1") + ".weight";
    if (part.rfind("conv.", 0) == 0) {  // a resampling block
      const bool plain_conv = m[1] == "encoder" && conv_down;
      return prefix + (plain_conv ? "main.conv." : "main.conv.conv.") + part.substr(5);
    }
    ADD_FAILURE() << "no original name for " << key;
  }
  static const std::map<std::string, std::string> fixed = {
      {"encoder.conv_in.conv.", "encoder.project_in.conv.conv."},
      {"encoder.conv_in.", "encoder.project_in.conv."},
      {"encoder.conv_out.", "encoder.project_out.main.op_list.0.conv."},
      {"decoder.conv_in.", "decoder.project_in.main.conv."},
      {"decoder.norm_out.", "decoder.project_out.op_list.0."},
      {"decoder.conv_out.conv.", "decoder.project_out.op_list.2.conv.conv."},
      {"decoder.conv_out.", "decoder.project_out.op_list.2.conv."}};
  for (auto it = fixed.rbegin(); it != fixed.rend(); ++it)  // longer prefixes sort later
    if (key.rfind(it->first, 0) == 0) return it->second + key.substr(it->first.size());
  ADD_FAILURE() << "no original name for " << key;
  return key;
}

// Writes `model` as an original checkpoint: fused 4-D qkv convs and 4-D projections.
std::string write_original(const AutoencoderDC& model, const std::string& file_name) {
  const DcaeConfig& c = model.config();
  std::vector<NamedTensor> tensors;
  std::map<std::string, std::vector<Tensor>> qkv;
  for (const auto& [name, t] : model.state()) {
    const auto at = name.find(".attn.to_");
    if (at != std::string::npos && name.find("to_qkv_multiscale") == std::string::npos) {
      const std::string block = name.substr(0, at);
      const std::string attn_prefix = original_name(block + ".attn.norm_out.weight", c);
      const std::string main = attn_prefix.substr(0, attn_prefix.size() - std::string("proj.norm.weight").size());
      if (name.ends_with("to_out.weight")) {
        tensors.emplace_back(main + "proj.conv.weight", t.reshape({t.size(0), t.size(1), 1, 1}));
      } else {
        qkv[main].push_back(t);
      }
      continue;
    }
    tensors.emplace_back(original_name(name, c), t);
  }
  for (const auto& [main, parts] : qkv) {
    EXPECT_EQ(parts.size(), 3u);  // state order: to_q, to_k, to_v
    std::vector<float> fused;
    for (const Tensor& p : parts) {
      const auto v = p.to_vector<float>();
      fused.insert(fused.end(), v.begin(), v.end());
    }
    tensors.emplace_back(main + "qkv.conv.weight",
                         from_vector(fused, {3 * parts[0].size(0), parts[0].size(1), 1, 1}));
  }
  const std::string path = temp_path(file_name);
  write_safetensors(path, tensors);
  return path;
}

TEST(EfficientvitImport, RenamesSplitsAndSqueezesToTheSameModel) {
  for (bool sana_like : {false, true}) {
    DcaeConfig config = tiny(sana_like);
    if (sana_like) config.downsample_block_type = "Conv";
    const auto model = random_model(config, sana_like ? 700 : 800);
    const std::string path = write_original(*model, sana_like ? "orig_sana.safetensors" : "orig_in.safetensors");
    SafetensorsFile file(path);
    // Spot checks of the original names against the spec's table, so the inverse above is not just self-consistent.
    std::vector<std::string> expected = {
        "encoder.stages.2.op_list.0.context_module.main.qkv.conv.weight",
        "encoder.stages.3.op_list.0.context_module.main.aggreg.0.0.weight",
        "encoder.stages.3.op_list.0.context_module.main.aggreg.0.1.weight",
        "encoder.stages.2.op_list.0.context_module.main.proj.conv.weight",
        "encoder.stages.2.op_list.0.local_module.main.point_conv.norm.bias",
        "decoder.stages.1.op_list.1.main.conv2.norm.running_mean",
        "encoder.project_out.main.op_list.0.conv.weight",
        "decoder.project_in.main.conv.weight",
        "decoder.stages.1.op_list.0.main.conv.conv.bias",
        "decoder.project_out.op_list.0.weight"};
    if (sana_like) {
      for (const char* name : {"encoder.project_in.conv.bias", "encoder.stages.0.op_list.0.main.conv2.norm.weight",
                               "encoder.stages.0.op_list.1.main.conv.weight", "decoder.project_out.op_list.2.conv.weight",
                               "decoder.stages.0.op_list.1.main.conv2.norm.running_var"})
        expected.push_back(name);
    } else {
      for (const char* name : {"encoder.project_in.conv.conv.weight", "encoder.stages.1.op_list.1.main.conv.conv.weight",
                               "decoder.project_out.op_list.2.conv.conv.bias"})
        expected.push_back(name);
    }
    for (const auto& name : expected) EXPECT_TRUE(file.contains(name)) << name;
    EXPECT_EQ(file.entry("encoder.stages.2.op_list.0.context_module.main.qkv.conv.weight").shape, (Shape{24, 8, 1, 1}));
    EXPECT_TRUE(is_efficientvit_checkpoint(file));

    const auto imported = load_efficientvit_checkpoint(path, config);
    expect_same_state(*imported, *model);
    // The rename table on the names the importer sees.
    EXPECT_EQ(efficientvit_to_diffusers_name("decoder.stages.2.op_list.1.local_module.main.depth_conv.conv.bias", config),
              "decoder.up_blocks.2.1.conv_out.conv_depth.bias");
    EXPECT_EQ(efficientvit_to_diffusers_name("encoder.project_in.conv.weight", config),
              sana_like ? "encoder.conv_in.weight" : "encoder.conv_in.conv.weight");
    fs::remove(path);
  }
}

TEST(EfficientvitImport, DetectsTheFamilyLikeDiffusers) {
  auto detect = [](std::vector<NamedTensor> tensors) {
    const std::string path = temp_path("detect.safetensors");
    write_safetensors(path, tensors);
    SafetensorsFile file(path);
    const std::string result = detect_efficientvit_model(file);
    fs::remove(path);
    return result;
  };
  const NamedTensor marker{"decoder.stages.1.op_list.0.main.conv.conv.bias", zeros({2})};
  auto project_in = [](int64_t latent) {
    return NamedTensor{"decoder.project_in.main.conv.weight", zeros({1, latent, 1, 1})};
  };
  EXPECT_EQ(detect({marker, project_in(32), {"encoder.project_in.conv.bias", zeros({2})}}), "dc-ae-f32c32-sana-1.0");
  EXPECT_EQ(detect({marker, project_in(32)}), "dc-ae-f32c32-mix-1.0");
  EXPECT_EQ(detect({marker, project_in(128)}), "dc-ae-f64c128-mix-1.0");
  EXPECT_EQ(detect({marker, project_in(512)}), "dc-ae-f128c512-mix-1.0");
  const std::string message = error_of([&] { detect({project_in(32)}); });
  EXPECT_NE(message.find("not an original"), std::string::npos) << message;
  // An original folder names its model in config.json, which wins over detection.
  const std::string dir = temp_path("original_folder");
  fs::create_directories(dir);
  write_safetensors(dir + "/model.safetensors", {marker, project_in(32)});
  std::ofstream(dir + "/config.json") << R"({"model_name": "dc-ae-f99c1-in-1.0"})";
  const std::string named = error_of([&] { load_efficientvit_checkpoint(dir); });
  EXPECT_NE(named.find("unknown DC-AE model 'dc-ae-f99c1-in-1.0'"), std::string::npos) << named;
  fs::remove_all(dir);
}

TEST(EfficientvitImport, MalformedFusedWeightsAndMismatchesAreNamed) {
  const DcaeConfig config = tiny(false);
  const auto model = random_model(config, 900);
  const std::string path = write_original(*model, "malformed.safetensors");
  std::vector<NamedTensor> tensors;
  {
    SafetensorsFile file(path);
    for (const auto& name : file.names()) {
      Tensor t = file.load(name);
      if (name == "encoder.stages.2.op_list.0.context_module.main.qkv.conv.weight") t = zeros({23, 8, 1, 1});
      if (name == "decoder.stages.1.op_list.0.main.conv.conv.bias") t = zeros({3});
      tensors.emplace_back(name, t);
    }
  }
  write_safetensors(path, tensors);
  const std::string message = error_of([&] { load_efficientvit_checkpoint(path, config); });
  EXPECT_NE(message.find("encoder.stages.2.op_list.0.context_module.main.qkv.conv.weight"), std::string::npos)
      << message;
  for (auto& [name, t] : tensors)  // a well-formed qkv again: now only the plain shape mismatch remains
    if (name == "encoder.stages.2.op_list.0.context_module.main.qkv.conv.weight") t = zeros({24, 8, 1, 1});
  write_safetensors(path, tensors);
  const std::string mismatch = error_of([&] { load_efficientvit_checkpoint(path, config); });
  EXPECT_NE(mismatch.find("decoder.up_blocks.1.0.conv.bias (checkpoint [3], model [32])"), std::string::npos) << mismatch;
  EXPECT_NE(mismatch.find("original DC-AE naming"), std::string::npos) << mismatch;
  fs::remove(path);
}

}  // namespace
}  // namespace dcae::nn
