// Loading diffusion transformer weights from efficientvit's files. Our parameter names are the reference modules'
// state_dict keys; the files wrap them in a prefix depending on who wrote them:
//   ""                  the module's own state_dict (e.g. converted with safetensors.torch.save_file)
//   "uvit." / "dit."    a diffusioncore training checkpoint's ema/model dict (get_trainable_modules())
//   "diffusion_model."  a Hugging Face DCAE_Diffusion_HF model.safetensors, beside "autoencoder.*" (skipped)
#pragma once
#include <string>
#include <vector>

#include "nn/diffusion/denoiser.h"

namespace dcae::nn::diffusion {

// The prefix in front of "pos_embed" among `names` (one of the above); an error naming the file when none fits.
std::string diffusion_key_prefix(const std::vector<std::string>& names, const std::string& source);

// Loads every parameter of `model` from the safetensors file at `path` (prefix detected and stripped, other keys
// under other prefixes ignored); missing, unexpected or mis-shaped names under the prefix are one error listing them.
void load_diffusion_weights(Denoiser& model, const std::string& path);

}  // namespace dcae::nn::diffusion
