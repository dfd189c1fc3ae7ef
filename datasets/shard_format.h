// The dcae image shard: one HDF5 file holding N images, readable by h5py.
//
//   images    uint8 [N, H, W, 3], chunked one image per chunk          (storage "raw")
//   encoded   variable-length uint8 [N], PNG or JPEG bytes per image   (storage "encoded")
//   labels    int64 [N], -1 when the dataset has no labels
//   names     variable-length UTF-8 strings [N], the source file of each image (relative to the input root)
//   attributes on the file: format_version, count, resolution, crop, storage, codec, source
//
// Files are written under a temporary name and renamed when complete, so a shard that exists is whole.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::datasets {

constexpr int64_t kShardFormatVersion = 1;

enum class ShardStorage { raw, encoded };
const char* storage_name(ShardStorage storage);
ShardStorage storage_from_name(const std::string& name);  // "raw" or "encoded"

struct ShardAttributes {
  int64_t resolution = 0;  // the side of the stored (square) images
  std::string crop;        // how images were brought to the resolution ("dmcrop", "resize")
  ShardStorage storage = ShardStorage::raw;
  std::string codec;       // "png" or "jpeg" for encoded storage, "" for raw
  std::string source;      // where the images came from (input folder or list)
};

// Appends images to a new shard; close() writes it. Destroying an unclosed writer removes the partial file.
class ShardWriter {
 public:
  ShardWriter(std::string path, ShardAttributes attributes);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Raw storage: a u8 image [H, W, 3]; every image of a shard has the same shape.
  void append(const Tensor& image, int64_t label, const std::string& name);
  // Encoded storage: the PNG/JPEG bytes of one image.
  void append_encoded(const std::vector<uint8_t>& bytes, int64_t label, const std::string& name);
  int64_t count() const { return static_cast<int64_t>(labels_.size()); }
  const std::string& path() const { return path_; }
  // Writes labels, names and attributes, closes the file and renames it into place.
  void close();

 private:
  struct Files;
  void open_images(int64_t height, int64_t width);
  std::string path_, temp_path_;
  ShardAttributes attributes_;
  std::unique_ptr<Files> files_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
  int64_t height_ = 0, width_ = 0;
  bool closed_ = false;
};

// Random access to the images of one shard. Opening validates the format and throws dcae::Error naming the file
// and what is wrong (missing, truncated, not HDF5, wrong version, missing or misshapen datasets). Thread-safe.
class ShardReader {
 public:
  explicit ShardReader(std::string path);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  const ShardAttributes& attributes() const { return attributes_; }
  // [H, W, 3] of the stored images (raw), or [resolution, resolution, 3] as the attributes say (encoded).
  Shape image_shape() const { return image_shape_; }

  // Image i as u8 [H, W, 3] (decoded when the shard stores encoded bytes).
  Tensor image(int64_t i) const;
  // Raw storage: copies image i into `out` (H * W * 3 bytes).
  void read_raw(int64_t i, uint8_t* out) const;
  // Encoded storage: the stored bytes of image i.
  std::vector<uint8_t> encoded(int64_t i) const;
  int64_t label(int64_t i) const;
  const std::string& name(int64_t i) const;
  const std::vector<int64_t>& labels() const { return labels_; }

 private:
  struct Files;
  void check_index(int64_t i, const char* what) const;
  std::string path_;
  ShardAttributes attributes_;
  std::unique_ptr<Files> files_;
  Shape image_shape_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
};

}  // namespace dcae::datasets
