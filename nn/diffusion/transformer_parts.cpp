#include "nn/diffusion/transformer_parts.h"

#include <cmath>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/join.h"
#include "ops/norm.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::nn::diffusion {

Tensor timestep_embedding(const Tensor& t, int64_t dim, DType dtype, Tensor& frequencies, double max_period) {
  DCAE_CHECK(dim > 0, "timestep embedding: dim must be positive, got ", dim);
  const int64_t half = dim / 2;
  if (!frequencies.defined() || frequencies.size(0) != half || frequencies.device() != t.device()) {
    std::vector<double> f(static_cast<size_t>(half));
    for (int64_t k = 0; k < half; ++k) f[k] = std::exp(-std::log(max_period) * static_cast<double>(k) / half);
    frequencies = from_doubles(f, {half}, DType::f64).to(t.device());
  }
  // t takes no gradient: the objective samples it.
  const Tensor args = ops::mul(t.detach().to(DType::f64).unsqueeze(1), frequencies.unsqueeze(0));  // [N, half]
  std::vector<Tensor> parts{ops::cos(args), ops::sin(args)};
  if (dim % 2) parts.push_back(zeros({t.size(0), 1}, DType::f64, t.device()));
  return ops::concat(parts, 1).to(dtype);
}

Tensor sincos_position_embedding_2d(int64_t dim, int64_t grid) {
  DCAE_CHECK(dim % 4 == 0 && dim > 0, "2-D sin-cos position embedding: dim must be a positive multiple of 4, got ",
             dim);
  DCAE_CHECK(grid > 0, "2-D sin-cos position embedding: grid must be positive, got ", grid);
  const int64_t quarter = dim / 4;  // frequencies per axis
  std::vector<double> table(static_cast<size_t>(grid * grid * dim));
  for (int64_t i = 0; i < grid; ++i) {
    for (int64_t j = 0; j < grid; ++j) {
      double* row = table.data() + (i * grid + j) * dim;
      // First half encodes the column (w), second half the row (h); each half is [sin | cos].
      const double positions[2] = {static_cast<double>(j), static_cast<double>(i)};
      for (int axis = 0; axis < 2; ++axis) {
        for (int64_t k = 0; k < quarter; ++k) {
          const double omega = 1.0 / std::pow(10000.0, static_cast<double>(k) / static_cast<double>(quarter));
          row[axis * 2 * quarter + k] = std::sin(positions[axis] * omega);
          row[axis * 2 * quarter + quarter + k] = std::cos(positions[axis] * omega);
        }
      }
    }
  }
  return from_doubles(table, {grid * grid, dim}, DType::f64);
}

void init_normal(const Tensor& param, double std, const InitOptions& init) {
  Tensor value = empty(param.shape(), DType::f32);
  normal_(value, 0.0, std, *init.generator);
  assign_in_place(param, value.to(param.dtype()).to(param.device()));
}

void init_xavier_uniform(const Tensor& param, const InitOptions& init) {
  const int64_t fan_out = param.size(0), fan_in = param.numel() / fan_out;
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  Tensor value = empty(param.shape(), DType::f32);
  uniform_(value, -bound, bound, *init.generator);
  assign_in_place(param, value.to(param.dtype()).to(param.device()));
}

void init_constant(const Tensor& param, double value) {
  assign_in_place(param, full(param.shape(), value, param.dtype(), param.device()));
}

TokenActivation token_activation_from_name(const std::string& name) {
  if (name == "gelu") return TokenActivation::gelu_erf;
  if (name == "gelu_tanh") return TokenActivation::gelu_tanh;
  if (name == "silu") return TokenActivation::silu;
  DCAE_FAIL("unknown activation '", name, "' (expected gelu (exact), gelu_tanh or silu)");
}

Tensor apply(TokenActivation act, const Tensor& x) {
  switch (act) {
    case TokenActivation::gelu_erf: return ops::gelu_erf(x);
    case TokenActivation::gelu_tanh: return ops::gelu_tanh(x);
    case TokenActivation::silu: return ops::silu(x);
  }
  return x;
}

LayerNorm::LayerNorm(int64_t dim, double eps, bool affine, DType dtype) : eps_(eps) {
  if (affine) {
    weight = register_parameter("weight", ones({dim}, dtype));
    bias = register_parameter("bias", zeros({dim}, dtype));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return ops::layer_norm(x, weight, bias, eps_); }

Embedding::Embedding(int64_t count, int64_t dim, const InitOptions& init) {
  weight = register_parameter("weight", empty({count, dim}, init.dtype));
  if (init.random_init) init_normal(weight, 1.0, init);
}

Tensor Embedding::forward(const Tensor& indices) { return ops::embedding(weight, indices); }

LabelEmbedder::LabelEmbedder(int64_t num_classes, int64_t dim, const InitOptions& init) {
  embedding_table = register_module("embedding_table", std::make_shared<Embedding>(num_classes + 1, dim, init));
}

Mlp::Mlp(int64_t dim, int64_t hidden, TokenActivation act, const InitOptions& init) : act_(act) {
  fc1_ = register_module("fc1", std::make_shared<Linear>(dim, hidden, true, init));
  fc2_ = register_module("fc2", std::make_shared<Linear>(hidden, dim, true, init));
}

Tensor Mlp::forward(const Tensor& x) { return (*fc2_)(apply(act_, (*fc1_)(x))); }

SelfAttention::SelfAttention(int64_t dim, int64_t num_heads, bool qkv_bias, const InitOptions& init)
    : num_heads_(num_heads) {
  DCAE_CHECK(num_heads > 0 && dim % num_heads == 0, "attention: ", num_heads, " heads do not divide width ", dim);
  qkv_ = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, qkv_bias, init));
  proj_ = register_module("proj", std::make_shared<Linear>(dim, dim, true, init));
}

Tensor SelfAttention::forward(const Tensor& x) {
  const int64_t n = x.size(0), len = x.size(1), dim = x.size(2), head_dim = dim / num_heads_;
  // [N, L, 3D] -> [3, N, heads, L, head_dim]
  const Tensor qkv = ops::permute(ops::reshape((*qkv_)(x), {n, len, 3, num_heads_, head_dim}), {2, 0, 3, 1, 4});
  const Tensor q = ops::contiguous(ops::select(qkv, 0, 0));
  const Tensor k = ops::contiguous(ops::select(qkv, 0, 1));
  const Tensor v = ops::contiguous(ops::select(qkv, 0, 2));
  const Tensor heads = ops::scaled_dot_product_attention(q, k, v);  // [N, heads, L, head_dim]
  return (*proj_)(ops::reshape(ops::permute(heads, {0, 2, 1, 3}), {n, len, dim}));
}

PatchEmbed::PatchEmbed(int64_t in_channels, int64_t dim, int64_t patch, const InitOptions& init) : patch_(patch) {
  proj_ = register_module("proj", std::make_shared<Conv2d>(in_channels, dim, patch, patch, 0, 1, true, init));
}

Tensor PatchEmbed::forward(const Tensor& x) {
  const Tensor y = (*proj_)(x);  // NHWC [N, H/p, W/p, D]
  return ops::reshape(y, {y.size(0), y.size(1) * y.size(2), y.size(3)});
}

Tensor unpatchify(const Tensor& tokens, int64_t grid, int64_t patch, int64_t channels) {
  const int64_t n = tokens.size(0);
  if (patch == 1) return ops::reshape(tokens, {n, grid, grid, channels});
  const Tensor cells = ops::reshape(tokens, {n, grid, grid, patch, patch, channels});
  return ops::reshape(ops::permute(cells, {0, 1, 3, 2, 4, 5}), {n, grid * patch, grid * patch, channels});
}

void check_denoiser_inputs(const std::string& model, const Tensor& x, const Tensor& t, const Tensor& labels,
                           int64_t in_channels, int64_t input_size, int64_t num_classes) {
  DCAE_CHECK(x.defined() && t.defined() && labels.defined(), model, ": x, t and labels must all be given");
  DCAE_CHECK(x.dim() == 4 && x.size(3) == in_channels, model, " expects NHWC latents [N, H, W, ", in_channels,
             "], got x ", x.str());
  DCAE_CHECK(x.size(1) == input_size && x.size(2) == input_size, model, " was built for ", input_size, "x",
             input_size, " latents (its position embeddings), got x ", x.str());
  const int64_t n = x.size(0);
  DCAE_CHECK(t.dim() == 1 && t.size(0) == n, model, " expects timesteps t [", n, "], got ", t.str());
  DCAE_CHECK(labels.dim() == 1 && labels.size(0) == n && labels.dtype() == DType::i64, model,
             " expects int64 labels [", n, "], got ", labels.str());
  DCAE_CHECK(t.device() == x.device() && labels.device() == x.device(), model, ": x ", x.str(), ", t ", t.str(),
             " and labels ", labels.str(), " must be on one device");
  if (labels.device().is_cpu()) {  // on the GPU the embedding kernel reports a bad id
    for (int64_t id : labels.contiguous().to_vector<int64_t>())
      DCAE_CHECK(id >= 0 && id <= num_classes, model, ": label ", id, " is out of range [0, ", num_classes,
                 "] (", num_classes, " = no class)");
  }
}

}  // namespace dcae::nn::diffusion
