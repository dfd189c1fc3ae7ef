// The pieces DiT and UViT share: embeddings of timesteps, classes, patches and positions, the token layers
// (LayerNorm, MLP, multi-head self-attention) and the token <-> NHWC latent reshapes. Tokens are [N, L, D] with
// L = (H / p) * (W / p) patches in row-major order, as the reference's patchify/flatten produces them. Parameter
// names are the reference PyTorch module names (timm's Attention/Mlp/PatchEmbed: qkv, proj, fc1, fc2).
#pragma once
#include <cstdint>
#include <string>

#include "nn/layers.h"

namespace dcae::nn::diffusion {

// Sinusoidal timestep embedding [N, dim] of t [N]: [cos(t f_0..f_{h-1}), sin(t f_0..f_{h-1})], h = dim / 2,
// f_k = max_period^(-k / h), with a zero column appended when dim is odd. Computed in f64 on t's device (the
// reference computes it in f32; f64 removes that rounding) and returned in `dtype`. `frequencies` is a cache:
// an f64 [h] tensor on t's device, rebuilt when absent or elsewhere (so a captured CUDA graph copies nothing).
Tensor timestep_embedding(const Tensor& t, int64_t dim, DType dtype, Tensor& frequencies, double max_period = 10000);

// DiT's fixed 2-D sin-cos position table, [grid * grid, dim] in f64: row i*grid + j holds
// [sincos_1d(dim / 2, j), sincos_1d(dim / 2, i)] (the reference's meshgrid puts w first), and sincos_1d(d, pos)
// = [sin(pos w_k), cos(pos w_k)], w_k = 10000^(-k / (d / 2)). dim must be a multiple of 4.
Tensor sincos_position_embedding_2d(int64_t dim, int64_t grid);

// Draws in f32 from the generator (as nn/layers.cpp does, so every dtype sees the same numbers) into `param`.
void init_normal(const Tensor& param, double std, const InitOptions& init);
void init_xavier_uniform(const Tensor& param, const InitOptions& init);  // over [out, prod(rest)]
void init_constant(const Tensor& param, double value);

enum class TokenActivation { gelu_erf, gelu_tanh, silu };
TokenActivation token_activation_from_name(const std::string& name);  // "gelu" (exact), "gelu_tanh", "silu"
Tensor apply(TokenActivation act, const Tensor& x);

// An activation as a layer, so nn::Sequential keeps the reference's indices ("mlp.0", "mlp.2").
class ActivationLayer : public Layer {
 public:
  explicit ActivationLayer(TokenActivation act) : act_(act) {}
  Tensor forward(const Tensor& x) override { return apply(act_, x); }

 private:
  TokenActivation act_;
};

// LayerNorm over the last dim; without affine it has no parameters (DiT's elementwise_affine=False).
class LayerNorm : public Layer {
 public:
  LayerNorm(int64_t dim, double eps, bool affine, DType dtype);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;

 private:
  double eps_;
};

// A parameter-less grouping of children: nn.ModuleList (append: "0", "1", ...) or a plain parent module whose
// forward lives in the model (add: a given name, e.g. "t_embedder.mlp").
class ModuleList : public Module {
 public:
  template <typename M>
  std::shared_ptr<M> append(std::shared_ptr<M> module) {
    return register_module(std::to_string(size_++), std::move(module));
  }
  template <typename M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> module) {
    return register_module(name, std::move(module));
  }

 private:
  int64_t size_ = 0;
};

// nn.Embedding: a "weight" table [V, D], initialised N(0, 1) as PyTorch does.
class Embedding : public Module {
 public:
  Embedding(int64_t count, int64_t dim, const InitOptions& init);
  Tensor forward(const Tensor& indices);
  Tensor weight;
};

// Class embedding table with one extra row, the "no class" id num_classes used for classifier-free guidance
// (the reference's LabelEmbedder with dropout_prob > 0). Label dropout itself is the training job's business.
class LabelEmbedder : public Module {
 public:
  LabelEmbedder(int64_t num_classes, int64_t dim, const InitOptions& init);
  Tensor forward(const Tensor& labels) { return embedding_table->forward(labels); }  // [N] -> [N, dim]
  std::shared_ptr<Embedding> embedding_table;
};

// fc1 -> activation -> fc2, hidden = int(dim * mlp_ratio).
class Mlp : public Layer {
 public:
  Mlp(int64_t dim, int64_t hidden, TokenActivation act, const InitOptions& init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Linear> fc1_, fc2_;
  TokenActivation act_;
};

// Multi-head self-attention on [N, L, D]: qkv (channels ordered [q | k | v], each head-major), softmax attention
// with scale 1/sqrt(head_dim), proj.
class SelfAttention : public Layer {
 public:
  SelfAttention(int64_t dim, int64_t num_heads, bool qkv_bias, const InitOptions& init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Linear> qkv_, proj_;
  int64_t num_heads_;
};

// Non-overlapping p x p patches of an NHWC latent -> tokens [N, (H/p)(W/p), D] through a conv "proj" (kernel p,
// stride p; p = 1 is a per-position linear map).
class PatchEmbed : public Layer {
 public:
  PatchEmbed(int64_t in_channels, int64_t dim, int64_t patch, const InitOptions& init);
  Tensor forward(const Tensor& x) override;
  Conv2d& proj() { return *proj_; }

 private:
  std::shared_ptr<Conv2d> proj_;
  int64_t patch_;
};

// Tokens [N, g*g, p*p*C] (channels ordered (p1, p2, C)) -> NHWC [N, g*p, g*p, C].
Tensor unpatchify(const Tensor& tokens, int64_t grid, int64_t patch, int64_t channels);

// The checks every denoiser makes on its inputs, naming `model` and the expected shapes.
void check_denoiser_inputs(const std::string& model, const Tensor& x, const Tensor& t, const Tensor& labels,
                           int64_t in_channels, int64_t input_size, int64_t num_classes);

}  // namespace dcae::nn::diffusion
