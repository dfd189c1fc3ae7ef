#include "datasets/loader.h"

#include <glog/logging.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "datasets/image_resize.h"
#include "datasets/manifest.h"
#include "datasets/sampler.h"
#include "datasets/shard_format.h"

namespace dcae::datasets {

std::string LoaderState::to_string() const {
  return "epoch=" + std::to_string(epoch) + " batch=" + std::to_string(batch);
}

LoaderState LoaderState::parse(const std::string& text) {
  LoaderState state;
  long long epoch = -1, batch = -1;
  char tail = 0;
  DCAE_CHECK(std::sscanf(text.c_str(), " epoch=%lld batch=%lld %c", &epoch, &batch, &tail) == 2 && epoch >= 0 &&
                 batch >= 0,
             "cannot parse loader state '", text, "' (expected 'epoch=E batch=B')");
  state.epoch = epoch;
  state.batch = batch;
  return state;
}

namespace {

// Opens the shards, leaving out (with a log line) or stopping at the first bad one, as the options say.
std::vector<std::unique_ptr<ShardReader>> open_shards(const LoaderOptions& options) {
  DCAE_CHECK(options.shards.empty() != options.shard_dir.empty(),
             "loader: give either shard files or a shard folder, not both or neither");
  std::vector<std::pair<std::string, std::string>> candidates;  // path, problem found before opening
  std::vector<int64_t> listed_counts;
  if (!options.shard_dir.empty()) {
    const Manifest manifest = read_manifest(options.shard_dir);
    for (const ShardEntry& entry : manifest.shards) {
      const std::string path = (std::filesystem::path(options.shard_dir) / entry.file).string();
      candidates.emplace_back(path, options.verify_checksums ? check_shard_file(options.shard_dir, entry) : "");
      listed_counts.push_back(entry.count);
    }
  } else {
    for (const std::string& path : options.shards) candidates.emplace_back(path, "");
  }
  std::vector<std::unique_ptr<ShardReader>> shards;
  for (size_t i = 0; i < candidates.size(); ++i) {
    std::string problem = candidates[i].second;
    std::unique_ptr<ShardReader> reader;
    if (problem.empty()) {
      try {
        reader = std::make_unique<ShardReader>(candidates[i].first);
        if (!listed_counts.empty() && reader->size() != listed_counts[i])
          problem = "shard '" + candidates[i].first + "' holds " + std::to_string(reader->size()) +
                    " images but the manifest lists " + std::to_string(listed_counts[i]);
      } catch (const Error& e) {
        problem = e.what();
      }
    }
    if (problem.empty()) {
      shards.push_back(std::move(reader));
      continue;
    }
    DCAE_CHECK(options.skip_bad_shards, "loader: ", problem);
    LOG(WARNING) << "loader: leaving out a bad shard: " << problem;
  }
  DCAE_CHECK(!shards.empty(), "loader: no usable shards among the ", candidates.size(), " given");
  return shards;
}

Tensor default_allocate(const Shape& shape, DType dtype) { return empty(shape, dtype); }

}  // namespace

struct Loader::Impl {
  LoaderOptions options;
  std::vector<std::unique_ptr<ShardReader>> shards;
  std::vector<std::string> paths;
  std::vector<int64_t> first_sample;  // prefix sums of shard sizes
  int64_t total = 0, per_rank = 0, per_epoch_batches = 0;
  float to_unit[256];  // u8 -> [-1, 1], exactly (x/255 - 0.5)/0.5 rounded once

  std::mutex mutex;
  std::condition_variable work_ready, batch_ready;
  int64_t next_to_build = 0, next_to_deliver = 0;
  std::map<int64_t, std::pair<Batch, std::exception_ptr>> done;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> epoch_samples;
  bool stopping = false;
  std::vector<std::thread> threads;

  std::shared_ptr<const std::vector<int64_t>> samples_of_epoch(int64_t epoch);
  void build(int64_t global_batch, Batch& batch, std::vector<uint8_t>& buffer);
  void load_sample(int64_t sample, int64_t epoch, float* out, std::vector<uint8_t>& buffer);
  void worker();
};

std::shared_ptr<const std::vector<int64_t>> Loader::Impl::samples_of_epoch(int64_t epoch) {
  std::lock_guard<std::mutex> lock(mutex);
  auto found = epoch_samples.find(epoch);
  if (found != epoch_samples.end()) return found->second;
  auto samples = std::make_shared<const std::vector<int64_t>>(
      rank_samples(total, options.seed, epoch, options.shuffle, options.rank, options.world_size, options.drop_last));
  while (epoch_samples.size() >= 3) epoch_samples.erase(epoch_samples.begin());  // only neighbours are in flight
  epoch_samples.emplace(epoch, samples);
  return samples;
}

void Loader::Impl::load_sample(int64_t sample, int64_t epoch, float* out, std::vector<uint8_t>& buffer) {
  const auto shard_index = std::upper_bound(first_sample.begin(), first_sample.end(), sample) - first_sample.begin() - 1;
  const ShardReader& shard = *shards[static_cast<size_t>(shard_index)];
  const int64_t local = sample - first_sample[static_cast<size_t>(shard_index)];
  const int64_t r = options.resolution;
  Tensor image;  // set when the pixels live in a tensor rather than in `buffer`
  int64_t height = shard.image_shape()[0], width = shard.image_shape()[1];
  if (shard.attributes().storage == ShardStorage::raw) {
    buffer.resize(static_cast<size_t>(height * width * 3));
    shard.read_raw(local, buffer.data());
    if (options.resize && std::min(height, width) != r) {
      image = resize_short_side(from_vector(buffer, {height, width, 3}), r);
    }
  } else {
    image = shard.image(local);
    if (options.resize && std::min(image.size(0), image.size(1)) != r) image = resize_short_side(image, r);
  }
  if (image.defined()) {
    height = image.size(0);
    width = image.size(1);
  }
  DCAE_CHECK(height >= r && width >= r, "loader: shard '", shard.path(), "' image ", local, " ('", shard.name(local),
             "') is ", height, "x", width, ", smaller than the training resolution ", r,
             " (set resize to scale images first)");
  const uint8_t* pixels = image.defined() ? image.data<uint8_t>() : buffer.data();
  AugmentDraw draw{(height - r) / 2, (width - r) / 2, false};
  if (options.random_crop || options.horizontal_flip) {
    const AugmentDraw random = augment_draw(options.seed, epoch, sample, height - r, width - r);
    if (options.random_crop) draw.top = random.top, draw.left = random.left;
    draw.flip = options.horizontal_flip && random.flip;
  }
  for (int64_t y = 0; y < r; ++y) {
    const uint8_t* row = pixels + ((draw.top + y) * width + draw.left) * 3;
    float* dst = out + y * r * 3;
    if (!draw.flip) {
      for (int64_t i = 0; i < r * 3; ++i) dst[i] = to_unit[row[i]];
    } else {
      for (int64_t x = 0; x < r; ++x) {
        const uint8_t* src = row + (r - 1 - x) * 3;
        dst[x * 3 + 0] = to_unit[src[0]];
        dst[x * 3 + 1] = to_unit[src[1]];
        dst[x * 3 + 2] = to_unit[src[2]];
      }
    }
  }
}

void Loader::Impl::build(int64_t global_batch, Batch& batch, std::vector<uint8_t>& buffer) {
  batch.epoch = global_batch / per_epoch_batches;
  batch.index = global_batch % per_epoch_batches;
  const auto samples = samples_of_epoch(batch.epoch);
  const int64_t begin = batch.index * options.batch_size;
  const int64_t count = std::min<int64_t>(options.batch_size, static_cast<int64_t>(samples->size()) - begin);
  const int64_t r = options.resolution;
  batch.samples.assign(samples->begin() + begin, samples->begin() + begin + count);
  batch.images = options.allocate({count, r, r, 3}, DType::f32);
  DCAE_CHECK(batch.images.defined() && batch.images.shape() == Shape({count, r, r, 3}) &&
                 batch.images.dtype() == DType::f32 && batch.images.is_contiguous(),
             "loader: the batch allocator must return a contiguous f32 tensor [", count, ", ", r, ", ", r,
             ", 3], got ", batch.images.defined() ? batch.images.str() : std::string("undefined"));
  batch.labels = empty({count}, DType::i64);
  float* images = batch.images.data<float>();
  int64_t* labels = batch.labels.data<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t sample = batch.samples[static_cast<size_t>(i)];
    load_sample(sample, batch.epoch, images + i * r * r * 3, buffer);
    const auto shard = std::upper_bound(first_sample.begin(), first_sample.end(), sample) - first_sample.begin() - 1;
    labels[i] = shards[static_cast<size_t>(shard)]->label(sample - first_sample[static_cast<size_t>(shard)]);
  }
}

void Loader::Impl::worker() {
  std::vector<uint8_t> buffer;
  while (true) {
    int64_t global_batch = 0;
    {
      std::unique_lock<std::mutex> lock(mutex);
      work_ready.wait(lock, [&] { return stopping || next_to_build < next_to_deliver + options.prefetch; });
      if (stopping) return;
      global_batch = next_to_build++;
    }
    Batch batch;
    std::exception_ptr error;
    try {
      build(global_batch, batch, buffer);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      done.emplace(global_batch, std::make_pair(std::move(batch), error));
    }
    batch_ready.notify_all();
  }
}

Loader::Loader(LoaderOptions options, LoaderState start) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  DCAE_CHECK(options.batch_size > 0 && options.resolution > 0 && options.workers > 0 && options.prefetch > 0,
             "loader: batch_size, resolution, workers and prefetch must be positive, got ", options.batch_size, ", ",
             options.resolution, ", ", options.workers, ", ", options.prefetch);
  DCAE_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size, "loader: rank ",
             options.rank, " is outside a world of size ", options.world_size);
  if (!options.allocate) options.allocate = default_allocate;
  s.options = std::move(options);
  s.shards = open_shards(s.options);
  for (const auto& shard : s.shards) {
    s.first_sample.push_back(s.total);
    s.total += shard->size();
    s.paths.push_back(shard->path());
    const Shape& shape = shard->image_shape();
    DCAE_CHECK(s.options.resize || (shape[0] >= s.options.resolution && shape[1] >= s.options.resolution),
               "loader: shard '", shard->path(), "' stores ", shape[0], "x", shape[1],
               " images, smaller than the training resolution ", s.options.resolution,
               " (set resize to scale them, or use larger shards)");
  }
  const LoaderOptions& o = s.options;
  s.per_rank = o.drop_last ? s.total / o.world_size : (s.total - o.rank + o.world_size - 1) / o.world_size;
  s.per_epoch_batches = o.drop_last ? s.per_rank / o.batch_size : (s.per_rank + o.batch_size - 1) / o.batch_size;
  DCAE_CHECK(s.per_epoch_batches > 0, "loader: rank ", o.rank, " gets ", s.per_rank, " of the ", s.total,
             " images over ", o.world_size, " ranks, less than one batch of ", o.batch_size);
  DCAE_CHECK(start.epoch >= 0 && start.batch >= 0 && start.batch < s.per_epoch_batches, "loader: cannot resume at ",
             start.to_string(), ": an epoch has ", s.per_epoch_batches, " batches");
  for (int v = 0; v < 256; ++v) s.to_unit[v] = static_cast<float>((v / 255.0 - 0.5) / 0.5);
  s.next_to_build = s.next_to_deliver = start.epoch * s.per_epoch_batches + start.batch;
  for (int t = 0; t < o.workers; ++t) s.threads.emplace_back([this] { impl_->worker(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->work_ready.notify_all();
  for (std::thread& thread : impl_->threads) thread.join();
}

Batch Loader::next() {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mutex);
  s.batch_ready.wait(lock, [&] { return s.done.count(s.next_to_deliver) > 0; });
  auto found = s.done.find(s.next_to_deliver);
  // A failed batch stays where it is: state() still names it and a further next() reports it again.
  if (found->second.second) std::rethrow_exception(found->second.second);
  Batch batch = std::move(found->second.first);
  s.done.erase(found);
  ++s.next_to_deliver;
  lock.unlock();
  s.work_ready.notify_all();
  return batch;
}

LoaderState Loader::state() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return {impl_->next_to_deliver / impl_->per_epoch_batches, impl_->next_to_deliver % impl_->per_epoch_batches};
}

int64_t Loader::dataset_size() const { return impl_->total; }
int64_t Loader::samples_per_epoch() const { return impl_->per_rank; }
int64_t Loader::batches_per_epoch() const { return impl_->per_epoch_batches; }
const std::vector<std::string>& Loader::shard_paths() const { return impl_->paths; }

}  // namespace dcae::datasets
