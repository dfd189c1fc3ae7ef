// The autoencoder a training job trains, as the models registry builds it: a module (parameters, checkpoints,
// freezing) plus encode/decode and the name of the decoder's last layer weight (where the adaptive GAN weight
// compares gradients). The built-in factories cover every published DC-AE name and "dc-ae-custom"; model.config
// overrides the named configuration field by field (diffusers config.json names), so a tiny custom model is a
// published name plus a few lines of recipe.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "nn/dcae/config.h"
#include "nn/layers.h"

namespace dcae::trainer {

class Recipe;

struct ModelSpec {
  std::string name;                                  // model.name
  nlohmann::json config = nlohmann::json::object();  // model.config
  nn::InitOptions init;                              // generator and dtype of a random init
  const Recipe* recipe = nullptr;                    // plugin models read their own keys here
};

struct TrainModel {
  std::shared_ptr<nn::Module> module;
  std::function<Tensor(const Tensor&)> encode;  // NHWC images in [-1, 1] -> latent
  std::function<Tensor(const Tensor&)> decode;  // latent -> NHWC images
  std::string last_layer;                       // full parameter name of the decoder's output weight
  std::string summary;                          // one line for the log: name, compression, parameter count
};

using ModelFactory = std::function<TrainModel(const ModelSpec&)>;

// The DC-AE configuration for a published name with `overrides` applied, or for "dc-ae-custom" the overrides read
// as a diffusers config.json (its defaults fill what they leave out, per-stage fields following the stage count).
// Unknown override keys are an error naming them; the result is validated.
nn::dcae_model::DcaeConfig dcae_config_with_overrides(const std::string& name, const nlohmann::json& overrides);

// A TrainModel around nn::dcae_model::AutoencoderDC built from `config`.
TrainModel make_dcae_train_model(const nn::dcae_model::DcaeConfig& config, const std::string& name,
                                 const nn::InitOptions& init);

// Loads weights into `module` from model.init_from: a .safetensors file (diffusers or our own names), a diffusers
// folder (diffusion_pytorch_model.safetensors; its config.json, when present, must describe the same model), a
// checkpoint folder (model.safetensors) or a checkpoints folder (its newest complete checkpoint). Every module
// tensor must be present with its shape; values are cast to the module's dtype. Returns the file read.
std::string load_initial_weights(nn::Module& module, const std::string& path,
                                 const nn::dcae_model::DcaeConfig* config = nullptr);

}  // namespace dcae::trainer
