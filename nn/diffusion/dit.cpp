#include "nn/diffusion/dit.h"

#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/view.h"

namespace dcae::nn::diffusion {

namespace {

// x * (1 + scale) + shift, with scale and shift [N, D] broadcast over the tokens of x [N, L, D].
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  return ops::add(ops::mul(x, ops::add(ops::unsqueeze(scale, 1), 1.0)), ops::unsqueeze(shift, 1));
}

// SiLU -> Linear(D, pieces * D), named "adaLN_modulation.1".
std::shared_ptr<Sequential> make_modulation(int64_t dim, int64_t pieces, const InitOptions& init) {
  auto seq = std::make_shared<Sequential>();
  seq->append(std::make_shared<ActivationLayer>(TokenActivation::silu));
  seq->append(std::make_shared<Linear>(dim, pieces * dim, true, init));
  return seq;
}

void check_config(const DiTConfig& c) {
  DCAE_CHECK(c.shape.in_channels > 0 && c.shape.input_size > 0 && c.shape.num_classes > 0,
             "DiT: in_channels, input_size and num_classes must be positive, got ", c.shape.in_channels, ", ",
             c.shape.input_size, ", ", c.shape.num_classes);
  DCAE_CHECK(c.patch_size > 0 && c.shape.input_size % c.patch_size == 0, "DiT: patch_size ", c.patch_size,
             " must divide input_size ", c.shape.input_size);
  DCAE_CHECK(c.depth > 0 && c.hidden_size > 0 && c.mlp_ratio > 0 && c.frequency_embedding_size > 0,
             "DiT: depth, hidden_size, mlp_ratio and frequency_embedding_size must be positive");
  DCAE_CHECK(c.hidden_size % 4 == 0, "DiT: hidden_size ", c.hidden_size,
             " must be a multiple of 4 (2-D sin-cos position embedding)");
  DCAE_CHECK(c.num_heads > 0 && c.hidden_size % c.num_heads == 0, "DiT: num_heads ", c.num_heads,
             " must divide hidden_size ", c.hidden_size);
}

}  // namespace

DiTBlock::DiTBlock(const DiTConfig& c, const InitOptions& init) {
  norm1_ = register_module("norm1", std::make_shared<LayerNorm>(c.hidden_size, 1e-6, false, init.dtype));
  attn_ = register_module("attn", std::make_shared<SelfAttention>(c.hidden_size, c.num_heads, true, init));
  norm2_ = register_module("norm2", std::make_shared<LayerNorm>(c.hidden_size, 1e-6, false, init.dtype));
  const auto hidden = static_cast<int64_t>(static_cast<double>(c.hidden_size) * c.mlp_ratio);
  mlp_ = register_module("mlp", std::make_shared<Mlp>(c.hidden_size, hidden, TokenActivation::gelu_tanh, init));
  ada_ln_ = register_module("adaLN_modulation", make_modulation(c.hidden_size, 6, init));
}

Tensor DiTBlock::forward(const Tensor& x, const Tensor& c) {
  const std::vector<Tensor> m = ops::chunk((*ada_ln_)(c), 6, 1);  // shift, scale, gate for attention, then MLP
  Tensor h = ops::add(x, ops::mul(ops::unsqueeze(m[2], 1), (*attn_)(modulate((*norm1_)(x), m[0], m[1]))));
  return ops::add(h, ops::mul(ops::unsqueeze(m[5], 1), (*mlp_)(modulate((*norm2_)(h), m[3], m[4]))));
}

DiT::DiT(const DiTConfig& config, const InitOptions& init) : config_(config) {
  check_config(config_);
  const int64_t d = config_.hidden_size;
  grid_ = config_.shape.input_size / config_.patch_size;
  x_embedder_ = register_module("x_embedder", std::make_shared<PatchEmbed>(in_channels(), d, config_.patch_size, init));
  auto t_embedder = register_module("t_embedder", std::make_shared<ModuleList>());
  t_mlp_ = std::make_shared<Sequential>();
  t_mlp_->append(std::make_shared<Linear>(config_.frequency_embedding_size, d, true, init));
  t_mlp_->append(std::make_shared<ActivationLayer>(TokenActivation::silu));
  t_mlp_->append(std::make_shared<Linear>(d, d, true, init));
  t_embedder->add("mlp", t_mlp_);
  y_embedder_ = register_module("y_embedder", std::make_shared<LabelEmbedder>(num_classes(), d, init));
  pos_embed_ = register_parameter("pos_embed", empty({1, grid_ * grid_, d}, init.dtype), /*trainable=*/false);
  auto blocks = register_module("blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < config_.depth; ++i) blocks_.push_back(blocks->append(std::make_shared<DiTBlock>(config_, init)));
  auto final_layer = register_module("final_layer", std::make_shared<ModuleList>());
  final_norm_ = std::make_shared<LayerNorm>(d, 1e-6, false, init.dtype);
  final_linear_ = std::make_shared<Linear>(d, config_.patch_size * config_.patch_size * out_channels(), true, init);
  final_ada_ln_ = make_modulation(d, 2, init);
  final_layer->add("norm_final", final_norm_);
  final_layer->add("linear", final_linear_);
  final_layer->add("adaLN_modulation", final_ada_ln_);
  initialize(init);
}

void DiT::initialize(const InitOptions& init) {
  // The fixed table is part of the architecture: written even when weights are about to be loaded.
  assign_in_place(pos_embed_, sincos_position_embedding_2d(config_.hidden_size, grid_)
                                  .reshape({1, grid_ * grid_, config_.hidden_size})
                                  .to(pos_embed_.dtype()));
  if (!init.random_init) return;
  // As the reference's initialize_weights: every Linear xavier-uniform with zero bias, then the exceptions.
  for (const auto& [name, module] : named_modules()) {
    if (auto* linear = dynamic_cast<Linear*>(module)) {
      init_xavier_uniform(linear->weight, init);
      if (linear->bias.defined()) init_constant(linear->bias, 0.0);
    }
  }
  init_xavier_uniform(x_embedder_->proj().weight, init);  // like a Linear over [D, C * p * p]
  init_constant(x_embedder_->proj().bias, 0.0);
  init_normal(y_embedder_->embedding_table->weight, 0.02, init);
  init_normal(dynamic_cast<Linear&>(t_mlp_->at(0)).weight, 0.02, init);
  init_normal(dynamic_cast<Linear&>(t_mlp_->at(2)).weight, 0.02, init);
  // adaLN-Zero: every block starts as the identity, and the output as zero.
  for (const auto& [name, p] : named_parameters())
    if (name.find("adaLN_modulation") != std::string::npos) init_constant(p, 0.0);
  init_constant(final_linear_->weight, 0.0);
  init_constant(final_linear_->bias, 0.0);
}

Tensor DiT::forward(const Tensor& x_in, const Tensor& t, const Tensor& labels) {
  check_denoiser_inputs("DiT", x_in, t, labels, in_channels(), input_size(), num_classes());
  const DType dtype = pos_embed_.dtype();
  const Tensor x = x_in.dtype() == dtype ? x_in : ops::cast(x_in, dtype);
  Tensor h = ops::add((*x_embedder_)(x), pos_embed_);  // [N, L, D]
  const Tensor t_emb = (*t_mlp_)(timestep_embedding(t, config_.frequency_embedding_size, dtype, frequencies_));
  const Tensor c = ops::add(t_emb, y_embedder_->forward(labels));  // [N, D]
  for (const auto& block : blocks_) h = block->forward(h, c);
  const std::vector<Tensor> m = ops::chunk((*final_ada_ln_)(c), 2, 1);  // shift, scale
  h = (*final_linear_)(modulate((*final_norm_)(h), m[0], m[1]));
  return unpatchify(h, grid_, config_.patch_size, out_channels());
}

}  // namespace dcae::nn::diffusion
