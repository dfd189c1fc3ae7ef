#include "nn/diffusion/uvit.h"

#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/view.h"

namespace dcae::nn::diffusion {

namespace {

void check_config(const UViTConfig& c) {
  DCAE_CHECK(c.shape.in_channels > 0 && c.shape.input_size > 0 && c.shape.num_classes > 0,
             "UViT: in_channels, input_size and num_classes must be positive, got ", c.shape.in_channels, ", ",
             c.shape.input_size, ", ", c.shape.num_classes);
  DCAE_CHECK(c.patch_size > 0 && c.shape.input_size % c.patch_size == 0, "UViT: patch_size ", c.patch_size,
             " must divide input_size ", c.shape.input_size);
  DCAE_CHECK(c.depth >= 2 && c.depth % 2 == 0, "UViT: depth must be even and >= 2 (depth/2 in and out blocks), got ",
             c.depth);
  DCAE_CHECK(c.hidden_size > 0 && c.mlp_ratio > 0, "UViT: hidden_size and mlp_ratio must be positive");
  DCAE_CHECK(c.num_heads > 0 && c.hidden_size % c.num_heads == 0, "UViT: num_heads ", c.num_heads,
             " must divide hidden_size ", c.hidden_size);
  token_activation_from_name(c.activation);  // throws naming the choices
}

// timm's trunc_normal_(std=0.02): N(0, 0.02) cut at +-2 (absolute), drawn in f32.
void init_trunc_normal(const Tensor& param, const InitOptions& init) {
  Tensor value = empty(param.shape(), DType::f32);
  trunc_normal_(value, 0.0, 0.02, -2.0, 2.0, *init.generator);
  assign_in_place(param, value.to(param.dtype()).to(param.device()));
}

}  // namespace

UViTBlock::UViTBlock(const UViTConfig& c, bool skip, const InitOptions& init) {
  norm1_ = register_module("norm1", std::make_shared<LayerNorm>(c.hidden_size, 1e-5, true, init.dtype));
  attn_ = register_module("attn", std::make_shared<SelfAttention>(c.hidden_size, c.num_heads, c.qkv_bias, init));
  norm2_ = register_module("norm2", std::make_shared<LayerNorm>(c.hidden_size, 1e-5, true, init.dtype));
  const auto hidden = static_cast<int64_t>(static_cast<double>(c.hidden_size) * c.mlp_ratio);
  mlp_ = register_module("mlp", std::make_shared<Mlp>(c.hidden_size, hidden, token_activation_from_name(c.activation),
                                                      init));
  if (skip) skip_linear_ = register_module("skip_linear", std::make_shared<Linear>(2 * c.hidden_size, c.hidden_size,
                                                                                   true, init));
}

Tensor UViTBlock::forward(const Tensor& x_in, const Tensor& skip) {
  DCAE_CHECK(skip.defined() == (skip_linear_ != nullptr), "UViT block: a skip input is ",
             skip_linear_ ? "required" : "not expected", " here");
  const Tensor x = skip_linear_ ? (*skip_linear_)(ops::concat({x_in, skip}, -1)) : x_in;
  const Tensor h = ops::add(x, (*attn_)((*norm1_)(x)));
  return ops::add(h, (*mlp_)((*norm2_)(h)));
}

UViT::UViT(const UViTConfig& config, const InitOptions& init) : config_(config) {
  check_config(config_);
  const int64_t d = config_.hidden_size;
  grid_ = config_.shape.input_size / config_.patch_size;
  patch_embed_ = register_module("patch_embed",
                                 std::make_shared<PatchEmbed>(in_channels(), d, config_.patch_size, init));
  if (config_.mlp_time_embed) {
    time_embed_ = std::make_shared<Sequential>();
    time_embed_->append(std::make_shared<Linear>(d, 4 * d, true, init));
    time_embed_->append(std::make_shared<ActivationLayer>(TokenActivation::silu));
    time_embed_->append(std::make_shared<Linear>(4 * d, d, true, init));
    register_module("time_embed", time_embed_);
  }
  label_emb_ = register_module("label_emb", std::make_shared<LabelEmbedder>(num_classes(), d, init));
  pos_embed_ = register_parameter("pos_embed", empty({1, kExtraTokens + grid_ * grid_, d}, init.dtype));
  auto in_blocks = register_module("in_blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < config_.depth / 2; ++i)
    in_blocks_.push_back(in_blocks->append(std::make_shared<UViTBlock>(config_, false, init)));
  mid_block_ = register_module("mid_block", std::make_shared<UViTBlock>(config_, false, init));
  auto out_blocks = register_module("out_blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < config_.depth / 2; ++i)
    out_blocks_.push_back(out_blocks->append(std::make_shared<UViTBlock>(config_, true, init)));
  norm_ = register_module("norm", std::make_shared<LayerNorm>(d, 1e-5, true, init.dtype));
  decoder_pred_ = register_module("decoder_pred", std::make_shared<Linear>(
                                                      d, config_.patch_size * config_.patch_size * in_channels(), true, init));
  initialize(init);
}

void UViT::initialize(const InitOptions& init) {
  if (!init.random_init) return;
  // As the reference: pos_embed and every Linear truncated-normal(0.02) with zero bias; LayerNorms start at (1, 0);
  // the patch conv and the label table keep PyTorch's defaults (uniform +-1/sqrt(fan_in), N(0, 1)).
  init_trunc_normal(pos_embed_, init);
  for (const auto& [name, module] : named_modules()) {
    if (auto* linear = dynamic_cast<Linear*>(module)) {
      init_trunc_normal(linear->weight, init);
      if (linear->bias.defined()) init_constant(linear->bias, 0.0);
    }
  }
}

Tensor UViT::forward(const Tensor& x_in, const Tensor& t, const Tensor& labels) {
  check_denoiser_inputs("UViT", x_in, t, labels, in_channels(), input_size(), num_classes());
  const DType dtype = pos_embed_.dtype();
  const Tensor x = x_in.dtype() == dtype ? x_in : ops::cast(x_in, dtype);
  const int64_t n = x.size(0), d = config_.hidden_size;
  Tensor time_token = timestep_embedding(t, d, dtype, frequencies_);
  if (time_embed_) time_token = (*time_embed_)(time_token);
  const Tensor label_token = label_emb_->forward(labels);
  Tensor h = ops::concat({ops::reshape(label_token, {n, 1, d}), ops::reshape(time_token, {n, 1, d}),
                          (*patch_embed_)(x)}, 1);
  h = ops::add(h, pos_embed_);
  std::vector<Tensor> skips;
  for (const auto& block : in_blocks_) {
    h = block->forward(h);
    skips.push_back(h);
  }
  h = mid_block_->forward(h);
  for (const auto& block : out_blocks_) {
    h = block->forward(h, skips.back());
    skips.pop_back();
  }
  h = (*decoder_pred_)((*norm_)(h));
  h = ops::slice(h, 1, kExtraTokens, h.size(1));
  return unpatchify(h, grid_, config_.patch_size, in_channels());
}

}  // namespace dcae::nn::diffusion
