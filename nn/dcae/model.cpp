#include "nn/dcae/model.h"

#include "ops/elementwise.h"
#include "ops/spatial.h"

namespace dcae::nn::dcae_model {

namespace {

std::shared_ptr<Layer> make_block(const std::string& type, int64_t width, int64_t head_dim,
                                  const std::vector<int64_t>& scales, const std::string& norm, Activation act,
                                  InitOptions init) {
  if (type == "ResBlock") return std::make_shared<ResBlock>(width, norm, act, init);
  return std::make_shared<EfficientViTBlock>(width, head_dim, scales, norm, init);
}

}  // namespace

Encoder::Encoder(const DcaeConfig& c, InitOptions init)
    : out_shortcut_(c.encoder_out_shortcut), latent_channels_(c.latent_channels) {
  const int64_t n = c.num_stages();
  const auto& width = c.encoder_block_out_channels;
  const auto& depth = c.encoder_layers_per_block;
  const bool unshuffle = c.downsample_block_type == "pixel_unshuffle";
  // A stage-0 depth of 0 moves the first down-sampling into the stem (no shortcut there).
  if (depth[0] > 0) {
    conv_in_ = register_module("conv_in", std::make_shared<Conv2d>(c.in_channels, width[0], 3, 1, 1, 1, true, init));
  } else {
    conv_in_ = register_module("conv_in", std::make_shared<DownBlock>(c.in_channels, width[1], unshuffle, false, init));
  }
  auto down_blocks = register_module("down_blocks", std::make_shared<Sequential>());
  for (int64_t i = 0; i < n; ++i) {
    auto stage = std::make_shared<Sequential>();
    for (int64_t j = 0; j < depth[i]; ++j)
      stage->append(make_block(c.encoder_block_types[i], width[i], c.attention_head_dim, c.encoder_qkv_multiscales[i],
                               "rms_norm", Activation::silu, init));
    if (i < n - 1 && depth[i] > 0)
      stage->append(std::make_shared<DownBlock>(width[i], width[i + 1], unshuffle, true, init));
    down_blocks->append(stage);
    stages_.push_back(stage);
  }
  conv_out_ = register_module("conv_out", std::make_shared<Conv2d>(width[n - 1], c.latent_channels, 3, 1, 1, 1, true, init));
}

Tensor Encoder::forward(const Tensor& images) {
  DCAE_CHECK(images.dim() == 4, "encoder input must be NHWC [N, H, W, C], got ", images.str());
  Tensor h = (*conv_in_)(images);  // children through operator(): their forward hooks (FSDP units) run
  for (auto& stage : stages_) h = (*stage)(h);
  Tensor latent = (*conv_out_)(h);
  return out_shortcut_ ? ops::add(latent, ops::channel_average(h, latent_channels_)) : latent;
}

Decoder::Decoder(const DcaeConfig& c, InitOptions init) : conv_act_(activation_from_name(c.decoder_conv_act_fn)),
                                                          in_shortcut_(c.decoder_in_shortcut) {
  const int64_t n = c.num_stages();
  const auto& width = c.decoder_block_out_channels;
  const auto& depth = c.decoder_layers_per_block;
  const bool interpolate = c.upsample_block_type == "interpolate";
  conv_in_ = register_module("conv_in", std::make_shared<Conv2d>(c.latent_channels, width[n - 1], 3, 1, 1, 1, true, init));
  auto up_blocks = register_module("up_blocks", std::make_shared<Sequential>());
  for (int64_t i = 0; i < n; ++i) {
    auto stage = std::make_shared<Sequential>();
    if (i < n - 1 && depth[i] > 0) stage->append(std::make_shared<UpBlock>(width[i + 1], width[i], interpolate, true, init));
    for (int64_t j = 0; j < depth[i]; ++j)
      stage->append(make_block(c.decoder_block_types[i], width[i], c.attention_head_dim, c.decoder_qkv_multiscales[i],
                               c.decoder_norm_types[i], activation_from_name(c.decoder_act_fns[i]), init));
    up_blocks->append(stage);
    stages_.push_back(stage);
  }
  const int64_t head_width = depth[0] > 0 ? width[0] : width[1];
  norm_out_ = register_module("norm_out", std::make_shared<RMSNorm2d>(head_width, 1e-5, init.dtype));
  if (depth[0] > 0) {
    conv_out_ = register_module("conv_out", std::make_shared<Conv2d>(head_width, c.in_channels, 3, 1, 1, 1, true, init));
  } else {
    conv_out_ = register_module("conv_out", std::make_shared<UpBlock>(head_width, c.in_channels, interpolate, false, init));
  }
  first_width_ = width[n - 1];
}

Tensor Decoder::forward(const Tensor& latent) {
  DCAE_CHECK(latent.dim() == 4, "decoder input must be an NHWC latent [N, h, w, L], got ", latent.str());
  Tensor h = (*conv_in_)(latent);
  if (in_shortcut_) h = ops::add(h, ops::channel_repeat_interleave(latent, first_width_));
  for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) h = (**it)(h);
  return (*conv_out_)(activate(conv_act_, (*norm_out_)(h)));
}

AutoencoderDC::AutoencoderDC(const DcaeConfig& config, InitOptions init) : config_(config) {
  config_.validate();
  encoder_ = register_module("encoder", std::make_shared<Encoder>(config_, init));
  decoder_ = register_module("decoder", std::make_shared<Decoder>(config_, init));
}

Tensor AutoencoderDC::encode(const Tensor& images) {
  const int64_t f = config_.spatial_compression();
  DCAE_CHECK(images.dim() == 4 && images.size(3) == config_.in_channels && images.size(1) % f == 0 &&
                 images.size(2) % f == 0,
             "encode needs NHWC images [N, H, W, ", config_.in_channels, "] with H and W multiples of ", f, ", got ",
             images.str());
  return (*encoder_)(images);
}

Tensor AutoencoderDC::decode(const Tensor& latent) {
  DCAE_CHECK(latent.dim() == 4 && latent.size(3) == config_.latent_channels, "decode needs NHWC latents [N, h, w, ",
             config_.latent_channels, "], got ", latent.str());
  return (*decoder_)(latent);
}

}  // namespace dcae::nn::dcae_model
