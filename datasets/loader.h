// The training data loader: shards in, NHWC float batches in [-1, 1] out.
//
// Worker threads read (and decode, for encoded shards) images, crop them to the training resolution (random or
// centre, optionally after scaling the stored image so its short side is the resolution), flip them at random and
// normalise x/127.5 - 1 into batches kept in a bounded prefetch queue. Each rank reads a disjoint part of every
// epoch; order and augmentation are pure functions of (seed, epoch, sample), so the batches are the same for any
// number of workers and a loader restarted from a saved LoaderState continues with exactly the batches the old
// one would have produced. One set of shards serves every resolution (e.g. 256^2 and 512^2 from 512^2 shards).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::datasets {

// Allocates a batch's image tensor (contiguous, CPU-addressable). Called from worker threads. The default is plain
// CPU memory; the CUDA backend plugs pinned host memory in here so batches can be copied to the GPU asynchronously.
using BatchAllocator = std::function<Tensor(const Shape& shape, DType dtype)>;

struct LoaderOptions {
  // The shards: either explicit files or a dcae-shard output folder (its manifest.json lists them).
  std::vector<std::string> shards;
  std::string shard_dir;
  bool verify_checksums = false;  // shard_dir only: check size and CRC-32 of each shard against the manifest
  bool skip_bad_shards = false;   // leave out (and log) a missing or corrupt shard instead of stopping

  int64_t batch_size = 32;
  int64_t resolution = 256;      // training resolution; stored images must be at least this large unless resize
  bool resize = false;           // first scale each image so its short side equals the resolution (DMCrop scaling)
  bool random_crop = true;       // else the centre crop
  bool horizontal_flip = true;   // mirror half of the samples
  bool shuffle = true;
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  bool drop_last = true;  // full batches only and the same number on every rank (what data-parallel training needs)

  int workers = 4;
  int64_t prefetch = 8;  // batches prepared ahead of the consumer (at least 1)
  BatchAllocator allocate;
};

struct Batch {
  Tensor images;                 // f32 [B, resolution, resolution, 3] in [-1, 1]
  Tensor labels;                 // i64 [B], -1 for unlabelled images
  std::vector<int64_t> samples;  // dataset-wide sample ids (the shards' images concatenated in order)
  int64_t epoch = 0, index = 0;  // index of the batch within its epoch
};

// Where a loader stands: the batch next() returns next. Save it with a checkpoint; pass it to a new Loader (same
// options) to resume.
struct LoaderState {
  int64_t epoch = 0;
  int64_t batch = 0;
  std::string to_string() const;                  // "epoch=3 batch=17"
  static LoaderState parse(const std::string& text);
  bool operator==(const LoaderState& other) const = default;
};

class Loader {
 public:
  explicit Loader(LoaderOptions options, LoaderState start = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch, in order (epochs follow each other without end). Rethrows a worker's error, which names the
  // shard file and image.
  Batch next();
  LoaderState state() const;
  int64_t dataset_size() const;       // images in all shards in use
  int64_t samples_per_epoch() const;  // images this rank sees per epoch (before drop_last trims batches)
  int64_t batches_per_epoch() const;
  const std::vector<std::string>& shard_paths() const;  // the shards in use (bad ones skipped)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dcae::datasets
