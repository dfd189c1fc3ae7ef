// DC-AE architecture description: the fields of diffusers' AutoencoderDC config.json, the published
// configurations by name, and JSON conversion both ways.
#pragma once
#include <string>
#include <vector>

namespace dcae::nn::dcae_model {

struct DcaeConfig {
  int64_t in_channels = 3;
  int64_t latent_channels = 32;
  int64_t attention_head_dim = 32;
  std::vector<std::string> encoder_block_types;  // per stage: "ResBlock" | "EfficientViTBlock"
  std::vector<std::string> decoder_block_types;
  std::vector<int64_t> encoder_block_out_channels;
  std::vector<int64_t> decoder_block_out_channels;
  std::vector<int64_t> encoder_layers_per_block;
  std::vector<int64_t> decoder_layers_per_block;
  std::vector<std::vector<int64_t>> encoder_qkv_multiscales;
  std::vector<std::vector<int64_t>> decoder_qkv_multiscales;
  std::string upsample_block_type = "pixel_shuffle";      // or "interpolate"
  std::string downsample_block_type = "pixel_unshuffle";  // anything else: stride-2 conv
  std::vector<std::string> decoder_norm_types;            // per stage: "rms_norm" | "batch_norm"
  std::vector<std::string> decoder_act_fns;               // per stage: "relu" | "silu"
  bool encoder_out_shortcut = true;
  bool decoder_in_shortcut = true;
  std::string decoder_conv_act_fn = "relu";
  double scaling_factor = 1.0;

  int64_t num_stages() const { return static_cast<int64_t>(encoder_block_out_channels.size()); }
  int64_t spatial_compression() const { return int64_t{1} << (num_stages() - 1); }
  // Throws naming the field when lists disagree in length or channel counts do not divide.
  void validate() const;
};

// "dc-ae-f32c32-in-1.0", "-mix-1.0", "dc-ae-f64c128-in-1.0", ..., "dc-ae-f32c32-sana-1.0"/"-1.1",
// "dc-ae-lite-f32c32". A trailing "-diffusers" is accepted.
DcaeConfig published_config(const std::string& name);
std::vector<std::string> published_config_names();

// diffusers config.json text <-> config (strings broadcast to every stage as diffusers does).
DcaeConfig config_from_json(const std::string& json_text);
std::string config_to_json(const DcaeConfig& config);  // sorted keys, indent 2, like save_pretrained

}  // namespace dcae::nn::dcae_model
