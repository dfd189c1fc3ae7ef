// Helpers of the training-job tests: a tiny DC-AE recipe (f4, widths 8/16, one EfficientViT stage, a BatchNorm
// decoder stage) on 16^2 synthetic images that trains in well under a second per step on one core.
#pragma once
#include <map>
#include <string>

#include "nn/module.h"
#include "tests/trainer/trainer_testing.h"
#include "trainer/dcae_job.h"

namespace dcae::trainer::testing {

// The recipe text; `extra` (whole sections the base text lacks, e.g. [loss]) is appended; keys of sections it has
// go through overrides. `plugin` adds a top-level plugins list.
inline std::string tiny_recipe_text(const std::string& run_dir, const std::string& extra = "",
                                    const std::string& plugin = "") {
  return (plugin.empty() ? std::string() : "plugins = [\"" + plugin + "\"]\n") + R"([model]
name = "dc-ae-custom"

[model.config]
latent_channels = 4
attention_head_dim = 8
encoder_block_out_channels = [8, 16, 16]
decoder_block_out_channels = [8, 16, 16]
encoder_block_types = ["ResBlock", "ResBlock", "EfficientViTBlock"]
decoder_block_types = ["ResBlock", "ResBlock", "EfficientViTBlock"]
encoder_layers_per_block = [1, 1, 1]
decoder_layers_per_block = [1, 1, 1]
encoder_qkv_multiscales = [[], [], [5]]
decoder_qkv_multiscales = [[], [], [5]]
decoder_norm_types = ["batch_norm", "rms_norm", "rms_norm"]
decoder_act_fns = ["relu", "silu", "silu"]

[data]
synthetic = true
synthetic_images = 64
resolution = 16
batch_size = 2

[optim]
lr = 2e-3

[train]
steps = 4
device = "cpu"

[eval]
every = 2
images = 2

[checkpoint]
every = 2

[log]
every = 1
dir = ")" + run_dir + "\"\n" + extra;
}

// Writes the recipe into `dir` and loads it (plugins included) with `overrides`.
inline Recipe tiny_recipe(const ScratchDir& dir, const std::vector<std::string>& overrides = {},
                          const std::string& extra = "", const std::string& name = "tiny.toml",
                          const std::string& plugin = "") {
  const std::string path = write_file(dir.file(name), tiny_recipe_text(dir.file("run"), extra, plugin));
  return load_job_recipe(path, overrides);
}

// The globs of the phase-2 and phase-3 trainable sets of the tiny model.
inline std::vector<std::string> tiny_phase2_globs() {
  return {"encoder.down_blocks.2.*", "encoder.conv_out.*", "decoder.conv_in.*", "decoder.up_blocks.2.*"};
}
inline std::vector<std::string> tiny_phase3_globs() {
  return {"decoder.up_blocks.0.*", "decoder.norm_out.*", "decoder.conv_out.*"};
}
inline std::string globs_toml(const std::vector<std::string>& globs) {
  std::string out = "[";
  for (size_t i = 0; i < globs.size(); ++i) out += (i ? ", \"" : "\"") + globs[i] + "\"";
  return out + "]";
}

// Copies of every parameter and buffer, by name.
inline std::map<std::string, Tensor> snapshot(const nn::Module& module) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : module.state()) out[name] = t.clone();
  return out;
}

inline bool bit_identical(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

}  // namespace dcae::trainer::testing
