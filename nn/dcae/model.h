// The DC-AE autoencoder (diffusers AutoencoderDC layout): Encoder, Decoder and the pair, built from a DcaeConfig.
#pragma once
#include <memory>

#include "nn/dcae/blocks.h"
#include "nn/dcae/config.h"

namespace dcae::nn::dcae_model {

class Encoder : public Layer {
 public:
  Encoder(const DcaeConfig& config, InitOptions init);
  Tensor forward(const Tensor& images) override;  // [N, H, W, 3] in [-1, 1] -> raw latent [N, H/f, W/f, L]

 private:
  std::shared_ptr<Layer> conv_in_;
  std::vector<std::shared_ptr<Sequential>> stages_;
  std::shared_ptr<Conv2d> conv_out_;
  bool out_shortcut_;
  int64_t latent_channels_;
};

class Decoder : public Layer {
 public:
  Decoder(const DcaeConfig& config, InitOptions init);
  Tensor forward(const Tensor& latent) override;  // raw latent -> [N, H, W, 3]

 private:
  std::shared_ptr<Conv2d> conv_in_;
  std::vector<std::shared_ptr<Sequential>> stages_;  // index = stage id; run from last to first
  std::shared_ptr<RMSNorm2d> norm_out_;
  Activation conv_act_;
  std::shared_ptr<Layer> conv_out_;
  bool in_shortcut_;
  int64_t first_width_;
};

class AutoencoderDC : public Module {
 public:
  explicit AutoencoderDC(const DcaeConfig& config, InitOptions init = {});
  const DcaeConfig& config() const { return config_; }
  // Raw (unscaled) latents, as diffusers' encode(); multiply by config().scaling_factor for diffusion.
  Tensor encode(const Tensor& images);
  Tensor decode(const Tensor& latent);
  Tensor forward(const Tensor& images) { return decode(encode(images)); }
  Encoder& encoder() { return *encoder_; }
  Decoder& decoder() { return *decoder_; }

 private:
  DcaeConfig config_;
  std::shared_ptr<Encoder> encoder_;
  std::shared_ptr<Decoder> decoder_;
};

}  // namespace dcae::nn::dcae_model
