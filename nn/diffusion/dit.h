// DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers"), as efficientvit's diffusioncore/models/dit.py
// builds it for DC-AE latents: patch tokens plus a fixed 2-D sin-cos position table, a conditioning vector
// c = timestep MLP + class embedding, `depth` adaLN-Zero blocks and an adaLN final layer. Parameter names equal the
// reference state_dict keys (x_embedder.proj.*, t_embedder.mlp.{0,2}.*, y_embedder.embedding_table.weight,
// pos_embed, blocks.i.{attn.qkv,attn.proj,mlp.fc1,mlp.fc2,adaLN_modulation.1}.*, final_layer.{linear,
// adaLN_modulation.1}.*), so efficientvit checkpoints load by name. pos_embed is a frozen parameter (the
// reference's requires_grad=False), so num_parameters(true) is the published count.
#pragma once
#include <memory>
#include <vector>

#include "nn/diffusion/denoiser.h"
#include "nn/diffusion/transformer_parts.h"

namespace dcae::nn::diffusion {

struct DiTConfig {
  DenoiserShape shape;
  int64_t patch_size = 1;
  int64_t hidden_size = 1152;
  int64_t depth = 28;
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  bool learn_sigma = true;  // out_channels = 2 * in_channels (noise and a variance interpolation)
  int64_t frequency_embedding_size = 256;
};

// One adaLN-Zero block: c -> SiLU -> Linear -> (shift, scale, gate) for attention and MLP; LayerNorms without affine.
class DiTBlock : public Module {
 public:
  DiTBlock(const DiTConfig& config, const InitOptions& init);
  Tensor forward(const Tensor& x, const Tensor& c);

 private:
  std::shared_ptr<LayerNorm> norm1_, norm2_;
  std::shared_ptr<SelfAttention> attn_;
  std::shared_ptr<Mlp> mlp_;
  std::shared_ptr<Sequential> ada_ln_;
};

class DiT : public Denoiser {
 public:
  DiT(const DiTConfig& config, const InitOptions& init = {});
  Tensor forward(const Tensor& x, const Tensor& t, const Tensor& labels) override;

  int64_t in_channels() const override { return config_.shape.in_channels; }
  int64_t out_channels() const override { return config_.learn_sigma ? 2 * in_channels() : in_channels(); }
  int64_t num_classes() const override { return config_.shape.num_classes; }
  int64_t input_size() const override { return config_.shape.input_size; }
  const DiTConfig& config() const { return config_; }

 private:
  void initialize(const InitOptions& init);

  DiTConfig config_;
  int64_t grid_;
  Tensor pos_embed_;
  std::shared_ptr<PatchEmbed> x_embedder_;
  std::shared_ptr<Sequential> t_mlp_;
  std::shared_ptr<LabelEmbedder> y_embedder_;
  std::vector<std::shared_ptr<DiTBlock>> blocks_;
  std::shared_ptr<LayerNorm> final_norm_;
  std::shared_ptr<Linear> final_linear_;
  std::shared_ptr<Sequential> final_ada_ln_;
  Tensor frequencies_;  // timestep-embedding cache (not state)
};

}  // namespace dcae::nn::diffusion
