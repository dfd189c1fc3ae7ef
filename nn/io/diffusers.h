// Checkpoint interop for DC-AE: the one state loader every format goes through, and diffusers AutoencoderDC folders
// (config.json + diffusion_pytorch_model[.<variant>].safetensors) in both directions. Our parameter names are the
// diffusers names, so a diffusers folder maps onto model.state() one to one.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "nn/dcae/model.h"
#include "nn/io/safetensors.h"

namespace dcae::nn {

// One tensor a checkpoint offers under a model name: its stored shape and dtype, and how to read it. Reading is
// deferred so a multi-GB checkpoint is copied into the model one tensor at a time.
struct CheckpointTensor {
  Shape shape;
  DType dtype = DType::f32;
  std::function<Tensor()> read;
};
using CheckpointIndex = std::map<std::string, CheckpointTensor>;

// Every tensor of a safetensors file under its own name (the file must outlive the index).
CheckpointIndex index_safetensors(const SafetensorsFile& file);

// Copies each checkpoint tensor into the model's parameter or buffer of the same name, in place and cast to the
// model tensor's dtype (F32/BF16/F16 files load into any float model). Checks everything before writing anything:
// on a mismatch it throws one error listing every missing, unexpected, shape-mismatched and float/integer-mismatched
// name. A missing BatchNorm `num_batches_tracked` is tolerated (a counter; diffusers does not need it either).
// `source` names the checkpoint in messages.
void load_state(Module& model, const CheckpointIndex& checkpoint, const std::string& source);
void load_state(Module& model, const SafetensorsFile& file);

// "diffusion_pytorch_model.safetensors", or "diffusion_pytorch_model.<variant>.safetensors" (e.g. variant "fp16").
std::string diffusers_weights_name(const std::string& variant = "");

struct DiffusersLoadOptions {
  std::string variant;         // "" = the default weights file; "fp16" = diffusion_pytorch_model.fp16.safetensors
  DType dtype = DType::f32;     // model dtype; stored floats are cast to it
};

// Builds the model from `folder`/config.json and loads the weights file (errors name the folder and file).
std::unique_ptr<dcae_model::AutoencoderDC> load_diffusers_folder(const std::string& folder,
                                                                 const DiffusersLoadOptions& options = {});

// Writes `folder` as AutoencoderDC.save_pretrained would: config.json and every key of model.state() with floats
// stored as `dtype` (integer buffers such as num_batches_tracked keep I64). The folder is assembled under a
// temporary name and renamed into place, so a crash never leaves a half-written folder under the final name; an
// existing folder at `folder` is replaced.
void save_diffusers_folder(const dcae_model::AutoencoderDC& model, const std::string& folder,
                           DType dtype = DType::f32, const std::string& variant = "");

// model.state() as one plain safetensors file (floats as `dtype`), written atomically.
void save_state_safetensors(const Module& model, const std::string& path, DType dtype = DType::f32);

}  // namespace dcae::nn
