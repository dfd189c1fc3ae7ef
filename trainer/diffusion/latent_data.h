// Class-labelled latents for diffusion training, registered by name (registries().latent_datasets, data.source of a
// diffusion recipe):
//
//   latent_shards  dcae-encode's latent shards (data.latent_shards: a file, a glob, or a folder searched for *.h5),
//                  already multiplied by their scaling factor; rescaled to the job's factor when it differs
//   synthetic      generated class-conditional latents (data.synthetic_latents of them, data.latent_channels x
//                  data.latent_size^2): every class has its own smooth pattern, each latent adds its own noise
//
// Both partition samples over ranks, reshuffle per epoch (data.shuffle), are pure functions of (seed, position) and
// report a position a checkpoint stores, so a resumed run draws the very batches the old one would have.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/tensor/tensor.h"

namespace dcae::trainer {
class Recipe;
}

namespace dcae::trainer::diffusion {

struct LatentBatch {
  Tensor latents;  // f32 [B, h, w, C] on the CPU, times the job's scaling factor
  Tensor labels;   // i64 [B], class ids in [0, num_classes)
};

class LatentSource {
 public:
  virtual ~LatentSource() = default;
  virtual LatentBatch next() = 0;
  virtual nlohmann::json position() const = 0;
  virtual void restore(const nlohmann::json& position) = 0;
  virtual Shape latent_shape() const = 0;  // [h, w, C]
  virtual int64_t size() const = 0;        // samples in the dataset (all ranks)
  virtual std::string summary() const = 0;
  // The scaling factor the stored latents carry (1 for synthetic ones).
  virtual double stored_scaling_factor() const = 0;
};

struct LatentDataSpec {
  const Recipe* recipe = nullptr;
  int64_t batch_size = 8;
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  int64_t num_classes = 1000;     // labels must lie in [0, num_classes)
  double scaling_factor = 0.0;    // the job's factor (> 0); latents are rescaled from the stored one to it
};
using LatentDatasetFactory = std::function<std::unique_ptr<LatentSource>(const LatentDataSpec&)>;

std::unique_ptr<LatentSource> make_latent_shard_source(const LatentDataSpec& spec);
std::unique_ptr<LatentSource> make_synthetic_latent_source(const LatentDataSpec& spec);

// The latent shard files data.latent_shards names (sorted); errors name the key when nothing matches.
std::vector<std::string> latent_shard_files(const std::string& pattern);
// The scaling factor stored in the first latent shard `pattern` names.
double stored_scaling_factor(const std::string& pattern);

// The noise-free pattern of class `label` (the mean of its synthetic latents), f32 [size, size, C]: per channel a
// plane wave of class-specific direction and phase, amplitude 1.3.
Tensor synthetic_class_pattern(int64_t label, int64_t channels, int64_t size);
// Synthetic latent `index` of stream `seed`: class index % num_classes, its pattern plus 0.3 * N(0, 1) noise per
// element, f32 [size, size, C].
LatentBatch synthetic_latent(uint64_t seed, int64_t index, int64_t channels, int64_t size, int64_t num_classes);

}  // namespace dcae::trainer::diffusion
