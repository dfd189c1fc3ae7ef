// Miniature DC-AE configurations for tests: a published configuration's global settings (resamplers, shortcuts,
// in/out channels) with a few small stages, so every block kind and norm runs in milliseconds.
#pragma once
#include <string>
#include <vector>

#include "nn/dcae/config.h"

namespace dcae::testing {

// One stage, the same on the encoder and decoder side.
struct TinyStage {
  std::string block;  // "ResBlock" | "EfficientViTBlock"
  int64_t channels = 8;
  int64_t layers = 1;
  std::string decoder_norm = "rms_norm";  // "rms_norm" | "batch_norm"
  std::string decoder_act = "silu";       // "relu" | "silu"
  std::vector<int64_t> qkv_multiscales = {};  // e.g. {5}: the multi-scale attention branch
};

// 4 latent channels, attention heads of 4; `base` names the published configuration the rest comes from.
inline nn::dcae_model::DcaeConfig tiny_dcae_config(const std::vector<TinyStage>& stages,
                                                   const std::string& base = "dc-ae-f32c32-in-1.0") {
  nn::dcae_model::DcaeConfig c = nn::dcae_model::published_config(base);
  c.latent_channels = 4;
  c.attention_head_dim = 4;
  c.encoder_block_types.clear();
  c.encoder_block_out_channels.clear();
  c.encoder_layers_per_block.clear();
  c.encoder_qkv_multiscales.clear();
  c.decoder_norm_types.clear();
  c.decoder_act_fns.clear();
  for (const TinyStage& s : stages) {
    c.encoder_block_types.push_back(s.block);
    c.encoder_block_out_channels.push_back(s.channels);
    c.encoder_layers_per_block.push_back(s.layers);
    c.encoder_qkv_multiscales.push_back(s.qkv_multiscales);
    c.decoder_norm_types.push_back(s.decoder_norm);
    c.decoder_act_fns.push_back(s.decoder_act);
  }
  c.decoder_block_types = c.encoder_block_types;
  c.decoder_block_out_channels = c.encoder_block_out_channels;
  c.decoder_layers_per_block = c.encoder_layers_per_block;
  c.decoder_qkv_multiscales = c.encoder_qkv_multiscales;
  return c;
}

}  // namespace dcae::testing
