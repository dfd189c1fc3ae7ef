// Import of the original mit-han-lab/efficientvit DC-AE checkpoints (`model.safetensors` with names such as
// "encoder.stages.1.op_list.0.main.conv1.conv.weight"): the renames of diffusers-format.md §2.6, the split of the
// fused 1x1 qkv conv into to_q/to_k/to_v and the 4-D -> 2-D squeeze of the attention output projection.
#pragma once
#include <memory>
#include <string>

#include "nn/io/diffusers.h"

namespace dcae::nn {

// True when the file has the original naming (its decoder stage 1 starts with an up-sampling block).
bool is_efficientvit_checkpoint(const SafetensorsFile& file);

// The published configuration an original checkpoint belongs to, detected from key names and shapes as diffusers'
// single-file loader does: a plain stem conv (has "encoder.project_in.conv.bias") means dc-ae-f32c32-sana-1.0;
// otherwise the latent width (32 / 128 / other) picks f32c32 / f64c128 / f128c512. in and mix checkpoints have the
// same keys, so like diffusers this assumes "-mix-1.0" (only the scaling factor differs): pass the name when known.
std::string detect_efficientvit_model(const SafetensorsFile& file);

// The diffusers name of one original tensor name for `config` (before the qkv/proj surgery). Whether the stem and
// head convs get the ".conv" of a resampling block depends on the config (stage-0 depth 0), not on guesswork.
std::string efficientvit_to_diffusers_name(const std::string& original, const dcae_model::DcaeConfig& config);

// Every tensor of the original file under its diffusers name, with qkv split and projections squeezed on read.
// Errors name the original tensor when a fused weight has an unexpected shape or two names collide.
CheckpointIndex efficientvit_checkpoint_index(const SafetensorsFile& file, const dcae_model::DcaeConfig& config);

// Loads an original checkpoint: `path` is the .safetensors file or its folder (model.safetensors, and config.json
// whose "model_name" names the configuration). `model_name` "" means: config.json's model_name, else detection.
std::unique_ptr<dcae_model::AutoencoderDC> load_efficientvit_checkpoint(const std::string& path,
                                                                        const std::string& model_name = "",
                                                                        DType dtype = DType::f32);
std::unique_ptr<dcae_model::AutoencoderDC> load_efficientvit_checkpoint(const std::string& path,
                                                                        const dcae_model::DcaeConfig& config,
                                                                        DType dtype = DType::f32);

}  // namespace dcae::nn
