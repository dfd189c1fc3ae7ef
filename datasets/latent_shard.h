// The dcae latent shard: the cached DC-AE latents of one image shard, in one HDF5 file readable by h5py.
//
//   latents   float32 [N, h, w, C], NHWC (our layout, not PyTorch's NCHW), chunked one latent per chunk; already
//             multiplied by the scaling factor, i.e. what a diffusion model trains on
//   labels    int64 [N], -1 when the dataset has no labels
//   names     variable-length UTF-8 strings [N]: the image's name in its shard; a horizontally flipped copy is
//             stored as an extra entry named "<name>#flip"
//   attributes on the file: format_version, count, layout ("NHWC"), scaling_factor, model, source_shard, flipped
//
// Files are written under a temporary name and renamed when complete, so a latent shard that exists is whole.
// (This library does no encoding: dcae-encode runs the model and hands the latents to LatentShardWriter.)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::datasets {

constexpr int64_t kLatentShardFormatVersion = 1;
constexpr const char* kLatentLayout = "NHWC";
constexpr const char* kFlipSuffix = "#flip";

struct LatentShardAttributes {
  double scaling_factor = 1.0;  // the latents are raw_latent * scaling_factor
  std::string model;            // the model that encoded them (a folder or a name)
  std::string source_shard;     // the image shard they were encoded from
  bool flipped = false;         // true when horizontally flipped copies ("#flip" entries) are included
};

// Appends latents to a new latent shard; close() writes it. Destroying an unclosed writer removes the partial file.
class LatentShardWriter {
 public:
  LatentShardWriter(std::string path, LatentShardAttributes attributes);
  ~LatentShardWriter();
  LatentShardWriter(const LatentShardWriter&) = delete;
  LatentShardWriter& operator=(const LatentShardWriter&) = delete;

  // A floating-point CPU latent [h, w, C] (stored as float32); every latent of a shard has the same shape.
  void append(const Tensor& latent, int64_t label, const std::string& name);
  int64_t count() const { return static_cast<int64_t>(labels_.size()); }
  const std::string& path() const { return path_; }
  // Writes labels, names and attributes, closes the file and renames it into place. A shard with no latents is
  // refused: its latent shape would be unknown.
  void close();

 private:
  struct Files;
  std::string path_, temp_path_;
  LatentShardAttributes attributes_;
  std::unique_ptr<Files> files_;
  Shape latent_shape_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
  bool closed_ = false;
};

// Random access to the latents of one latent shard. Opening validates the format and throws dcae::Error naming
// the file and what is wrong (missing, not HDF5, an image shard, wrong version or layout, misshapen datasets).
// Thread-safe.
class LatentShardReader {
 public:
  explicit LatentShardReader(std::string path);
  ~LatentShardReader();
  LatentShardReader(const LatentShardReader&) = delete;
  LatentShardReader& operator=(const LatentShardReader&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  const LatentShardAttributes& attributes() const { return attributes_; }
  Shape latent_shape() const { return latent_shape_; }  // [h, w, C]

  // Latent i as f32 [h, w, C].
  Tensor latent(int64_t i) const;
  // Latents [start, start + count) as f32 [count, h, w, C].
  Tensor latents(int64_t start, int64_t count) const;
  int64_t label(int64_t i) const;
  const std::string& name(int64_t i) const;
  const std::vector<int64_t>& labels() const { return labels_; }
  const std::vector<std::string>& names() const { return names_; }

 private:
  struct Files;
  std::string path_;
  LatentShardAttributes attributes_;
  std::unique_ptr<Files> files_;
  Shape latent_shape_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
};

}  // namespace dcae::datasets
