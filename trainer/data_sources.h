// Training images for a job, registered by name (data.source): "shards" (HDF5 shards through datasets::Loader),
// "synthetic" (smooth generated images, nothing to download) and "folder" (every PNG/JPEG under data.folder, kept
// in memory). "auto" picks synthetic when data.synthetic, folder when data.folder is set, else shards.
// Every source partitions its images across ranks, is a pure function of (seed, position), and reports a position
// that a checkpoint stores so a resumed run continues with the very batches the old one would have drawn. The
// held-out evaluation images never appear in training batches.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/tensor/tensor.h"

namespace dcae::trainer {

class Recipe;

struct DataSpec {
  const Recipe* recipe = nullptr;  // sources read their keys (data.shards, data.folder, plugin keys) here
  int64_t batch_size = 8;
  int64_t resolution = 256;
  int64_t eval_images = 16;
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  Device device = Device::cpu();  // where training runs: batches for a GPU are built in page-locked memory
};

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  // The next training batch: f32 [batch, resolution, resolution, 3] in [-1, 1] on the CPU.
  virtual Tensor next() = 0;
  // Where next() continues; restore() of it on a source built from the same spec continues identically.
  virtual nlohmann::json position() const = 0;
  virtual void restore(const nlohmann::json& position) = 0;
  // The held-out images (at most eval_images): f32 [n, resolution, resolution, 3] in [-1, 1], the same every call.
  virtual Tensor eval_images() = 0;
  virtual std::string summary() const = 0;  // one line for the log
};

using DatasetFactory = std::function<std::unique_ptr<ImageSource>(const DataSpec&)>;

// The source data.source names ("auto" resolved as above).
std::string resolve_data_source(const Recipe& recipe);

// The built-in sources, also usable directly.
std::unique_ptr<ImageSource> make_shard_source(const DataSpec& spec);
std::unique_ptr<ImageSource> make_folder_source(const DataSpec& spec);
std::unique_ptr<ImageSource> make_synthetic_source(const DataSpec& spec);

// Smooth synthetic images in [-1, 1] (colour gradients and soft discs), f32 NHWC; image `index` of stream `seed`
// is always the same picture.
Tensor synthetic_image(uint64_t seed, int64_t index, int64_t size);

}  // namespace dcae::trainer
