// The diffusion transformers by name. DiT sizes from the DiT paper (dit-s, dit-b, dit-l, dit-xl; DC-AE uses dit-xl),
// UViT sizes from efficientvit's diffusion model zoo (uvit-s, uvit-h, uvit-2b) and USiT (usit-h, usit-2b: the
// UViT networks, trained with the SiT objective). All default to patch size 1, as every DC-AE configuration.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/diffusion/denoiser.h"

namespace dcae::nn::diffusion {

// `overrides` changes fields of the named configuration: patch_size, hidden_size, depth, num_heads, mlp_ratio for
// both families; learn_sigma and frequency_embedding_size for DiT; qkv_bias, mlp_time_embed and activation
// ("gelu" | "silu") for UViT/USiT. An unknown name or key is an error listing the known ones.
std::unique_ptr<Denoiser> make_diffusion_model(const std::string& name, const DenoiserShape& shape,
                                               const nlohmann::json& overrides = nlohmann::json::object(),
                                               const InitOptions& init = {});

std::vector<std::string> diffusion_model_names();

}  // namespace dcae::nn::diffusion
