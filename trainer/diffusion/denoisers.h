// The diffusion networks a recipe can name (registries().denoisers, model.name of a diffusion recipe): the
// transformers of nn/diffusion's zoo (dit-s/b/l/xl, uvit-s/h/2b, usit-h/2b; diffusion/builtins.cpp), and this file's "tiny-conv-denoiser": a few 3x3 convolutions with a sinusoidal timestep MLP, a class
// embedding and a learned position embedding, small enough to train on the CPU in CI (recipes/tiny_diffusion.toml).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "nn/diffusion/denoiser.h"
#include "nn/layers.h"

namespace dcae::trainer {
class Recipe;
}

namespace dcae::trainer::diffusion {

struct DenoiserSpec {
  std::string name;                                  // model.name
  nn::diffusion::DenoiserShape shape;                // latent channels and side, classes
  nlohmann::json config = nlohmann::json::object();  // model.config overrides
  nn::InitOptions init;
  const Recipe* recipe = nullptr;
};
using DenoiserFactory = std::function<std::shared_ptr<nn::diffusion::Denoiser>(const DenoiserSpec&)>;

// model.config keys: width (32), blocks (2), learn_sigma (false: out = in channels; true: 2x, for the hybrid loss).
std::shared_ptr<nn::diffusion::Denoiser> make_tiny_conv_denoiser(const DenoiserSpec& spec);

// Sinusoidal embedding of timesteps (DiT/U-ViT convention: [cos(t f_k), sin(t f_k)], f_k = 10000^(-k / (dim/2)))
// computed on the host: [N] -> [N, dim] in `dtype` on the timesteps' device. Timesteps take no gradient.
Tensor timestep_embedding(const Tensor& t, int64_t dim, DType dtype);

}  // namespace dcae::trainer::diffusion
