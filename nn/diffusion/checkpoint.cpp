#include "nn/diffusion/checkpoint.h"

#include "nn/io/diffusers.h"
#include "nn/io/safetensors.h"

namespace dcae::nn::diffusion {

std::string diffusion_key_prefix(const std::vector<std::string>& names, const std::string& source) {
  for (const char* prefix : {"", "diffusion_model.", "uvit.", "dit."})
    for (const std::string& name : names)
      if (name == std::string(prefix) + "pos_embed") return prefix;
  DCAE_FAIL("'", source, "' holds no diffusion transformer weights: expected a 'pos_embed' key, bare or under ",
            "'diffusion_model.', 'uvit.' or 'dit.'");
}

void load_diffusion_weights(Denoiser& model, const std::string& path) {
  const SafetensorsFile file(path);
  const std::vector<std::string> names = file.names();
  const std::string prefix = diffusion_key_prefix(names, path);
  CheckpointIndex index;
  for (auto& [name, tensor] : index_safetensors(file))
    if (name.rfind(prefix, 0) == 0) index[name.substr(prefix.size())] = std::move(tensor);
  load_state(model, index, prefix.empty() ? path : path + " (keys under '" + prefix + "')");
}

}  // namespace dcae::nn::diffusion
