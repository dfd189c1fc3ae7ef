#include "nn/dcae/config.h"

#include <nlohmann/json.hpp>

#include "core/tensor/error.h"

namespace dcae::nn::dcae_model {

namespace {

template <typename T>
std::vector<T> repeat(const T& value, int64_t n) {
  return std::vector<T>(static_cast<size_t>(n), value);
}

// The in/mix family: stage 0 empty, ResBlocks with BatchNorm + ReLU in decoder stages 0-2, EViT after.
DcaeConfig in_family(int64_t latent, const std::vector<int64_t>& widths, double scaling_factor) {
  const int64_t n = static_cast<int64_t>(widths.size());
  DcaeConfig c;
  c.latent_channels = latent;
  c.encoder_block_out_channels = c.decoder_block_out_channels = widths;
  for (int64_t i = 0; i < n; ++i) {
    const bool res = i < 3;
    c.encoder_block_types.push_back(res ? "ResBlock" : "EfficientViTBlock");
    c.encoder_layers_per_block.push_back(i == 0 ? 0 : i == 1 ? 4 : i == 2 ? 8 : 2);
    c.decoder_layers_per_block.push_back(i == 0 ? 0 : i == 1 ? 5 : i == 2 ? 10 : 2);
    c.decoder_norm_types.push_back(res ? "batch_norm" : "rms_norm");
    c.decoder_act_fns.push_back(res ? "relu" : "silu");
  }
  c.decoder_block_types = c.encoder_block_types;
  c.encoder_qkv_multiscales = c.decoder_qkv_multiscales = repeat(std::vector<int64_t>{}, n);
  c.scaling_factor = scaling_factor;
  return c;
}

DcaeConfig sana_family(double scaling_factor) {
  DcaeConfig c;
  c.latent_channels = 32;
  c.encoder_block_out_channels = c.decoder_block_out_channels = {128, 256, 512, 512, 1024, 1024};
  c.encoder_block_types = c.decoder_block_types = {"ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock",
                                                   "EfficientViTBlock", "EfficientViTBlock"};
  c.encoder_layers_per_block = {2, 2, 2, 3, 3, 3};
  c.decoder_layers_per_block = {3, 3, 3, 3, 3, 3};
  c.encoder_qkv_multiscales = c.decoder_qkv_multiscales = {{}, {}, {}, {5}, {5}, {5}};
  c.downsample_block_type = "Conv";
  c.upsample_block_type = "interpolate";
  c.decoder_norm_types = repeat<std::string>("rms_norm", 6);
  c.decoder_act_fns = repeat<std::string>("silu", 6);
  c.scaling_factor = scaling_factor;
  return c;
}

std::vector<int64_t> widths(int64_t stages) {
  std::vector<int64_t> w = {128, 256, 512, 512, 1024, 1024, 2048, 2048};
  w.resize(stages);
  return w;
}

// Reads a field that diffusers allows as a string (broadcast) or a list.
std::vector<std::string> string_list(const nlohmann::json& j, const char* key, int64_t n,
                                     const std::vector<std::string>& fallback) {
  if (!j.contains(key)) return fallback;
  if (j[key].is_string()) return repeat(j[key].get<std::string>(), n);
  return j[key].get<std::vector<std::string>>();
}

}  // namespace

void DcaeConfig::validate() const {
  const int64_t n = num_stages();
  DCAE_CHECK(n >= 1, "DC-AE config needs at least one stage");
  auto same = [&](size_t size, const char* field) {
    DCAE_CHECK(static_cast<int64_t>(size) == n, "DC-AE config field ", field, " has ", size, " entries, expected ",
               n, " (one per stage)");
  };
  same(encoder_block_types.size(), "encoder_block_types");
  same(decoder_block_types.size(), "decoder_block_types");
  same(decoder_block_out_channels.size(), "decoder_block_out_channels");
  same(encoder_layers_per_block.size(), "encoder_layers_per_block");
  same(decoder_layers_per_block.size(), "decoder_layers_per_block");
  same(encoder_qkv_multiscales.size(), "encoder_qkv_multiscales");
  same(decoder_qkv_multiscales.size(), "decoder_qkv_multiscales");
  same(decoder_norm_types.size(), "decoder_norm_types");
  same(decoder_act_fns.size(), "decoder_act_fns");
  DCAE_CHECK(encoder_block_out_channels.back() % latent_channels == 0 &&
                 decoder_block_out_channels.back() % latent_channels == 0,
             "latent_channels ", latent_channels, " must divide the last stage widths ",
             encoder_block_out_channels.back(), " and ", decoder_block_out_channels.back());
  for (int64_t i = 0; i < n; ++i) {
    for (const auto* types : {&encoder_block_types, &decoder_block_types}) {
      const std::string& t = (*types)[i];
      DCAE_CHECK(t == "ResBlock" || t == "EfficientViTBlock", "unknown block type '", t, "' in stage ", i);
      if (t == "EfficientViTBlock") {
        const int64_t width = types == &encoder_block_types ? encoder_block_out_channels[i] : decoder_block_out_channels[i];
        DCAE_CHECK(width % attention_head_dim == 0, "stage ", i, " width ", width, " is not a multiple of the head dim ",
                   attention_head_dim);
      }
    }
  }
}

DcaeConfig published_config(const std::string& requested) {
  std::string name = requested;
  const std::string suffix = "-diffusers";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    name.resize(name.size() - suffix.size());
  if (name == "dc-ae-f32c32-in-1.0") return in_family(32, widths(6), 0.3189);
  if (name == "dc-ae-f32c32-mix-1.0") return in_family(32, widths(6), 0.4552);
  if (name == "dc-ae-f64c128-in-1.0") return in_family(128, widths(7), 0.2889);
  if (name == "dc-ae-f64c128-mix-1.0") return in_family(128, widths(7), 0.4538);
  if (name == "dc-ae-f128c512-in-1.0") return in_family(512, widths(8), 0.4883);
  if (name == "dc-ae-f128c512-mix-1.0") return in_family(512, widths(8), 0.3620);
  if (name == "dc-ae-f32c32-sana-1.0" || name == "dc-ae-f32c32-sana-1.1") return sana_family(0.41407);
  if (name == "dc-ae-lite-f32c32" || name == "dc-ae-lite-f32c32-sana-1.1") {
    // Sana encoder; a decoder of ResBlocks only, pixel-shuffle up-sampling, SiLU head (spec §6.4).
    DcaeConfig c = sana_family(0.41407);
    c.decoder_block_types = repeat<std::string>("ResBlock", 6);
    c.decoder_layers_per_block = {0, 3, 5, 4, 4, 4};
    c.decoder_qkv_multiscales = repeat(std::vector<int64_t>{}, 6);
    c.upsample_block_type = "pixel_shuffle";
    c.decoder_conv_act_fn = "silu";
    return c;
  }
  std::string known;
  for (const auto& n : published_config_names()) known += (known.empty() ? "" : ", ") + n;
  DCAE_FAIL("unknown DC-AE model '", requested, "' (known: ", known, ")");
}

std::vector<std::string> published_config_names() {
  return {"dc-ae-f32c32-in-1.0",    "dc-ae-f32c32-mix-1.0",   "dc-ae-f64c128-in-1.0",  "dc-ae-f64c128-mix-1.0",
          "dc-ae-f128c512-in-1.0",  "dc-ae-f128c512-mix-1.0", "dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-sana-1.1",
          "dc-ae-lite-f32c32"};
}

DcaeConfig config_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    DCAE_FAIL("DC-AE config.json is not valid JSON: ", e.what());
  }
  DCAE_CHECK(j.is_object(), "DC-AE config.json must be a JSON object");
  try {
    // Start from diffusers' defaults (the AutoencoderDC signature), then override.
    DcaeConfig c = sana_family(1.0);
    c.downsample_block_type = "pixel_unshuffle";
    c.upsample_block_type = "pixel_shuffle";
    c.encoder_block_types = c.decoder_block_types = repeat<std::string>("ResBlock", 6);
    if (j.contains("in_channels")) c.in_channels = j["in_channels"].get<int64_t>();
    if (j.contains("latent_channels")) c.latent_channels = j["latent_channels"].get<int64_t>();
    if (j.contains("attention_head_dim")) c.attention_head_dim = j["attention_head_dim"].get<int64_t>();
    if (j.contains("encoder_block_out_channels"))
      c.encoder_block_out_channels = j["encoder_block_out_channels"].get<std::vector<int64_t>>();
    if (j.contains("decoder_block_out_channels"))
      c.decoder_block_out_channels = j["decoder_block_out_channels"].get<std::vector<int64_t>>();
    const int64_t n = c.num_stages();
    if (j.contains("encoder_layers_per_block"))
      c.encoder_layers_per_block = j["encoder_layers_per_block"].get<std::vector<int64_t>>();
    if (j.contains("decoder_layers_per_block"))
      c.decoder_layers_per_block = j["decoder_layers_per_block"].get<std::vector<int64_t>>();
    if (j.contains("encoder_qkv_multiscales"))
      c.encoder_qkv_multiscales = j["encoder_qkv_multiscales"].get<std::vector<std::vector<int64_t>>>();
    if (j.contains("decoder_qkv_multiscales"))
      c.decoder_qkv_multiscales = j["decoder_qkv_multiscales"].get<std::vector<std::vector<int64_t>>>();
    c.encoder_block_types = string_list(j, "encoder_block_types", n, repeat<std::string>("ResBlock", n));
    c.decoder_block_types = string_list(j, "decoder_block_types", n, repeat<std::string>("ResBlock", n));
    c.decoder_norm_types = string_list(j, "decoder_norm_types", n, repeat<std::string>("rms_norm", n));
    c.decoder_act_fns = string_list(j, "decoder_act_fns", n, repeat<std::string>("silu", n));
    if (j.contains("upsample_block_type")) c.upsample_block_type = j["upsample_block_type"].get<std::string>();
    if (j.contains("downsample_block_type")) c.downsample_block_type = j["downsample_block_type"].get<std::string>();
    if (j.contains("encoder_out_shortcut")) c.encoder_out_shortcut = j["encoder_out_shortcut"].get<bool>();
    if (j.contains("decoder_in_shortcut")) c.decoder_in_shortcut = j["decoder_in_shortcut"].get<bool>();
    if (j.contains("decoder_conv_act_fn")) c.decoder_conv_act_fn = j["decoder_conv_act_fn"].get<std::string>();
    if (j.contains("scaling_factor")) c.scaling_factor = j["scaling_factor"].get<double>();
    c.validate();
    return c;
  } catch (const nlohmann::json::exception& e) {
    DCAE_FAIL("DC-AE config.json has a field of the wrong type: ", e.what());
  }
}

std::string config_to_json(const DcaeConfig& c) {
  nlohmann::json j;  // nlohmann::json objects keep keys sorted
  j["_class_name"] = "AutoencoderDC";
  j["_diffusers_version"] = "0.32.0";
  j["in_channels"] = c.in_channels;
  j["latent_channels"] = c.latent_channels;
  j["attention_head_dim"] = c.attention_head_dim;
  j["encoder_block_types"] = c.encoder_block_types;
  j["decoder_block_types"] = c.decoder_block_types;
  j["encoder_block_out_channels"] = c.encoder_block_out_channels;
  j["decoder_block_out_channels"] = c.decoder_block_out_channels;
  j["encoder_layers_per_block"] = c.encoder_layers_per_block;
  j["decoder_layers_per_block"] = c.decoder_layers_per_block;
  j["encoder_qkv_multiscales"] = c.encoder_qkv_multiscales;
  j["decoder_qkv_multiscales"] = c.decoder_qkv_multiscales;
  j["upsample_block_type"] = c.upsample_block_type;
  j["downsample_block_type"] = c.downsample_block_type;
  j["decoder_norm_types"] = c.decoder_norm_types;
  j["decoder_act_fns"] = c.decoder_act_fns;
  j["encoder_out_shortcut"] = c.encoder_out_shortcut;
  j["decoder_in_shortcut"] = c.decoder_in_shortcut;
  j["decoder_conv_act_fn"] = c.decoder_conv_act_fn;
  j["scaling_factor"] = c.scaling_factor;
  return j.dump(2) + "\n";
}

}  // namespace dcae::nn::dcae_model
