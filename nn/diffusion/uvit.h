// U-ViT (Bao et al., "All are Worth Words"), as efficientvit's diffusioncore/models/uvit.py builds it for DC-AE
// latents: the class and the timestep become two extra tokens in front of the patch tokens (order: label, time,
// patches), a learned position embedding covers all of them, depth/2 "in" blocks whose outputs feed depth/2 "out"
// blocks in reverse order through long skips (skip_linear on [x, skip]), a mid block, a final LayerNorm and a
// linear decoder_pred back to patches. Parameter names equal the reference state_dict keys (patch_embed.proj.*,
// [time_embed.{0,2}.*], label_emb.embedding_table.weight, pos_embed, in_blocks.i.*, mid_block.*, out_blocks.i.*
// with norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2 and skip_linear, norm.*, decoder_pred.*). USiT is this
// network trained with the SiT (flow matching) objective.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/diffusion/denoiser.h"
#include "nn/diffusion/transformer_parts.h"

namespace dcae::nn::diffusion {

struct UViTConfig {
  DenoiserShape shape;
  int64_t patch_size = 1;
  int64_t hidden_size = 1152;
  int64_t depth = 28;  // in blocks = out blocks = depth / 2, plus the mid block
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  bool qkv_bias = false;
  bool mlp_time_embed = false;  // Linear-SiLU-Linear on the timestep embedding (reference default: identity)
  std::string activation = "gelu";  // exact GELU (nn.GELU), or "silu"
};

// Pre-norm transformer block; with a skip it first maps [x, skip] (2D channels) back to D.
class UViTBlock : public Module {
 public:
  UViTBlock(const UViTConfig& config, bool skip, const InitOptions& init);
  Tensor forward(const Tensor& x, const Tensor& skip = Tensor());

 private:
  std::shared_ptr<LayerNorm> norm1_, norm2_;
  std::shared_ptr<SelfAttention> attn_;
  std::shared_ptr<Mlp> mlp_;
  std::shared_ptr<Linear> skip_linear_;
};

class UViT : public Denoiser {
 public:
  UViT(const UViTConfig& config, const InitOptions& init = {});
  Tensor forward(const Tensor& x, const Tensor& t, const Tensor& labels) override;

  int64_t in_channels() const override { return config_.shape.in_channels; }
  int64_t out_channels() const override { return config_.shape.in_channels; }
  int64_t num_classes() const override { return config_.shape.num_classes; }
  int64_t input_size() const override { return config_.shape.input_size; }
  const UViTConfig& config() const { return config_; }

  static constexpr int64_t kExtraTokens = 2;  // label, time

 private:
  void initialize(const InitOptions& init);

  UViTConfig config_;
  int64_t grid_;
  Tensor pos_embed_;
  std::shared_ptr<PatchEmbed> patch_embed_;
  std::shared_ptr<Sequential> time_embed_;  // null: identity
  std::shared_ptr<LabelEmbedder> label_emb_;
  std::vector<std::shared_ptr<UViTBlock>> in_blocks_, out_blocks_;
  std::shared_ptr<UViTBlock> mid_block_;
  std::shared_ptr<LayerNorm> norm_;
  std::shared_ptr<Linear> decoder_pred_;
  Tensor frequencies_;
};

}  // namespace dcae::nn::diffusion
