#include "trainer/data_sources.h"

#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/cuda_tensor.h"
#endif

#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/tensor/philox.h"
#include "datasets/image_decode.h"
#include "datasets/image_resize.h"
#include "datasets/loader.h"
#include "datasets/manifest.h"
#include "datasets/sampler.h"
#include "nn/module.h"
#include "trainer/recipe.h"

namespace dcae::trainer {

namespace fs = std::filesystem;

std::string resolve_data_source(const Recipe& recipe) {
  const std::string source = recipe.get<std::string>("data.source");
  if (source != "auto") return source;
  if (recipe.get<bool>("data.synthetic")) return "synthetic";
  if (!recipe.get<std::string>("data.folder").empty()) return "folder";
  return "shards";
}

namespace {

// u8 -> [-1, 1] exactly as the shard loader maps it.
float unit_value(uint8_t v) { return static_cast<float>((v / 255.0 - 0.5) / 0.5); }

// A source over n images addressable by index: a rank's share of a (seed, epoch) permutation, full batches only.
class IndexedSource : public ImageSource {
 public:
  IndexedSource(const DataSpec& spec, int64_t size, bool shuffle) : spec_(spec), size_(size), shuffle_(shuffle) {
    per_epoch_ = size_ / spec.world_size / spec.batch_size;
    DCAE_CHECK(per_epoch_ > 0, "data: ", size_, " training images over ", spec.world_size,
               " ranks make less than one batch of ", spec.batch_size);
  }

  Tensor next() override {
    if (epoch_samples_.empty() || loaded_epoch_ != epoch_) {
      epoch_samples_ = datasets::rank_samples(size_, spec_.seed, epoch_, shuffle_, spec_.rank, spec_.world_size, true);
      loaded_epoch_ = epoch_;
    }
    const int64_t r = spec_.resolution;
    const Shape shape = {spec_.batch_size, r, r, 3};
#ifdef DCAE_WITH_CUDA
    // As the shard loader: batches for a GPU in page-locked memory, so their copy to the device runs asynchronously.
    Tensor batch = spec_.device.is_cuda() ? cuda::empty_page_locked(shape, DType::f32) : empty(shape, DType::f32);
#else
    Tensor batch = empty(shape, DType::f32);
#endif
    for (int64_t i = 0; i < spec_.batch_size; ++i) {
      const int64_t sample = epoch_samples_[static_cast<size_t>(batch_ * spec_.batch_size + i)];
      batch.select(0, i).copy_(training_image(sample, epoch_));
    }
    if (++batch_ == per_epoch_) batch_ = 0, ++epoch_;
    return batch;
  }
  nlohmann::json position() const override { return {{"epoch", epoch_}, {"batch", batch_}}; }
  void restore(const nlohmann::json& position) override {
    DCAE_CHECK(position.is_object() && position.contains("epoch") && position.contains("batch"),
               "data: cannot resume from position ", position.dump(), " (expected {epoch, batch})");
    const int64_t epoch = position["epoch"].get<int64_t>(), batch = position["batch"].get<int64_t>();
    DCAE_CHECK(epoch >= 0 && batch >= 0 && batch < per_epoch_, "data: cannot resume at epoch ", epoch, " batch ",
               batch, ": an epoch has ", per_epoch_, " batches");
    epoch_ = epoch, batch_ = batch;
  }

 protected:
  // Sample `index` as seen in `epoch` (augmented): f32 [r, r, 3].
  virtual Tensor training_image(int64_t index, int64_t epoch) = 0;
  DataSpec spec_;

 private:
  int64_t size_, per_epoch_ = 0, epoch_ = 0, batch_ = 0, loaded_epoch_ = -1;
  bool shuffle_;
  std::vector<int64_t> epoch_samples_;
};

class SyntheticSource final : public IndexedSource {
 public:
  explicit SyntheticSource(const DataSpec& spec)
      : IndexedSource(spec, spec.recipe ? spec.recipe->get<int64_t>("data.synthetic_images") : 256,
                      spec.recipe ? spec.recipe->get<bool>("data.shuffle") : true) {}
  Tensor eval_images() override {
    // A stream of its own (another seed), so held-out images are never training images.
    Tensor out = empty({spec_.eval_images, spec_.resolution, spec_.resolution, 3}, DType::f32);
    for (int64_t i = 0; i < spec_.eval_images; ++i)
      out.select(0, i).copy_(synthetic_image(spec_.seed ^ 0x5eed0e7a1ull, i, spec_.resolution));
    return out;
  }
  std::string summary() const override {
    return "synthetic images (" + std::to_string(spec_.resolution) + "^2, seed " + std::to_string(spec_.seed) + ")";
  }

 protected:
  // Image `index` is a pure function of (seed, index): generated once and kept while the set fits in 1 GiB, so
  // large images do not cost a host-side generation every step (the GPU benchmarks train on them).
  Tensor training_image(int64_t index, int64_t) override {
    const int64_t r = spec_.resolution, count = spec_.recipe ? spec_.recipe->get<int64_t>("data.synthetic_images") : 256;
    if (count * r * r * 3 * 4 > (int64_t{1} << 30)) return synthetic_image(spec_.seed, index, r);
    if (cache_.empty()) cache_.resize(static_cast<size_t>(count));
    Tensor& image = cache_.at(static_cast<size_t>(index));
    if (!image.defined()) image = synthetic_image(spec_.seed, index, r);
    return image;
  }

 private:
  std::vector<Tensor> cache_;
};

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::vector<std::string> image_files(const std::string& folder) {
  std::error_code ec;
  DCAE_CHECK(fs::is_directory(folder, ec), "data.folder '", folder, "' is not a folder");
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(folder))
    if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// Every image under data.folder, scaled so its short side is the resolution (a random crop and flip per epoch
// then picks the training view). The last eval.images files (sorted by path) are held out unless
// data.eval_folder gives the evaluation images.
class FolderSource final : public IndexedSource {
 public:
  static std::unique_ptr<ImageSource> make(const DataSpec& spec) {
    const std::string folder = spec.recipe->get<std::string>("data.folder");
    const std::string eval_folder = spec.recipe->get<std::string>("data.eval_folder");
    std::vector<std::string> train = image_files(folder), eval;
    if (!eval_folder.empty()) {
      eval = image_files(eval_folder);
    } else {
      const int64_t held_out = std::min<int64_t>(spec.eval_images, static_cast<int64_t>(train.size()) - 1);
      DCAE_CHECK(held_out >= 1, "data.folder '", folder, "' has ", train.size(),
                 " images: too few to hold some out for evaluation (give data.eval_folder)");
      eval.assign(train.end() - held_out, train.end());
      train.resize(train.size() - held_out);
    }
    DCAE_CHECK(!train.empty() && !eval.empty(), "data.folder '", folder, "': no training or evaluation images");
    return std::unique_ptr<ImageSource>(new FolderSource(spec, load_all(train, spec.resolution), eval, folder));
  }
  Tensor eval_images() override {
    const int64_t n = std::min<int64_t>(spec_.eval_images, static_cast<int64_t>(eval_files_.size()));
    const int64_t r = spec_.resolution;
    Tensor out = empty({n, r, r, 3}, DType::f32);
    for (int64_t i = 0; i < n; ++i)
      out.select(0, i).copy_(to_unit(datasets::dmcrop(datasets::read_image_file(eval_files_[i]), r), 0, 0, r, false));
    return out;
  }
  std::string summary() const override {
    return "folder '" + folder_ + "': " + std::to_string(images_.size()) + " training images, " +
           std::to_string(eval_files_.size()) + " held out";
  }

 protected:
  Tensor training_image(int64_t index, int64_t epoch) override {
    const Tensor& image = images_[static_cast<size_t>(index)];
    const int64_t r = spec_.resolution;
    const datasets::AugmentDraw draw =
        datasets::augment_draw(spec_.seed, epoch, index, image.size(0) - r, image.size(1) - r);
    return to_unit(image, draw.top, draw.left, r, draw.flip);
  }

 private:
  FolderSource(const DataSpec& spec, std::vector<Tensor> images, std::vector<std::string> eval, std::string folder)
      : IndexedSource(spec, static_cast<int64_t>(images.size()), spec.recipe->get<bool>("data.shuffle")),
        images_(std::move(images)), eval_files_(std::move(eval)), folder_(std::move(folder)) {}

  static std::vector<Tensor> load_all(const std::vector<std::string>& files, int64_t resolution) {
    std::vector<Tensor> images;
    for (const std::string& file : files) {
      Tensor image = datasets::read_image_file(file);
      DCAE_CHECK(std::min(image.size(0), image.size(1)) >= 1, "data.folder: empty image '", file, "'");
      images.push_back(datasets::resize_short_side(image, resolution).contiguous());
    }
    return images;
  }
  // An [r, r] window of a u8 image at (top, left), optionally mirrored, as f32 in [-1, 1].
  static Tensor to_unit(const Tensor& image, int64_t top, int64_t left, int64_t r, bool flip) {
    const Tensor src = image.contiguous();
    const uint8_t* pixels = src.data<const uint8_t>();
    const int64_t width = src.size(1);
    Tensor out = empty({r, r, 3}, DType::f32);
    float* dst = out.data<float>();
    for (int64_t y = 0; y < r; ++y)
      for (int64_t x = 0; x < r; ++x)
        for (int64_t c = 0; c < 3; ++c)
          dst[(y * r + x) * 3 + c] = unit_value(pixels[((top + y) * width + left + (flip ? r - 1 - x : x)) * 3 + c]);
    return out;
  }

  std::vector<Tensor> images_;
  std::vector<std::string> eval_files_;
  std::string folder_;
};

// data.shards: a shard file, a glob of them ("dir/shard-*.h5"), or a dcae-shard folder (manifest.json).
std::vector<std::string> expand_shards(const std::string& spec) {
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    std::vector<std::string> out;
    for (const auto& entry : datasets::read_manifest(spec).shards) out.push_back((fs::path(spec) / entry.file).string());
    return out;
  }
  if (spec.find_first_of("*?") == std::string::npos) return {spec};
  const fs::path pattern(spec);
  const fs::path dir = pattern.has_parent_path() ? pattern.parent_path() : fs::path(".");
  std::vector<std::string> out;
  if (fs::is_directory(dir, ec))
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.is_regular_file() && nn::glob_match(pattern.filename().string(), entry.path().filename().string()))
        out.push_back(entry.path().string());
  std::sort(out.begin(), out.end());
  DCAE_CHECK(!out.empty(), "data.shards '", spec, "' matches no file");
  return out;
}

class ShardSource final : public ImageSource {
 public:
  explicit ShardSource(const DataSpec& spec) : spec_(spec) {
    std::vector<std::string> train = expand_shards(spec.recipe->get<std::string>("data.shards"));
    const std::string eval_spec = spec.recipe->get<std::string>("data.eval_shards");
    if (!eval_spec.empty()) {
      eval_shards_ = expand_shards(eval_spec);
    } else {
      DCAE_CHECK(train.size() >= 2, "data.shards '", spec.recipe->get<std::string>("data.shards"),
                 "' is a single shard: give data.eval_shards (held-out images) or more shards (the last is held out)");
      eval_shards_ = {train.back()};
      train.pop_back();
    }
    options_.shards = train;
    options_.batch_size = spec.batch_size;
    options_.resolution = spec.resolution;
    options_.shuffle = spec.recipe->get<bool>("data.shuffle");
    options_.seed = spec.seed;
    options_.rank = spec.rank;
    options_.world_size = spec.world_size;
    options_.workers = static_cast<int>(std::max<int64_t>(1, spec.recipe->get<int64_t>("data.workers")));
#ifdef DCAE_WITH_CUDA
    // Batches for a GPU are built in page-locked memory, so their copy to the device runs asynchronously.
    if (spec.device.is_cuda()) options_.allocate = [](const Shape& shape, DType dtype) { return cuda::empty_page_locked(shape, dtype); };
#endif
    loader_ = std::make_unique<datasets::Loader>(options_);
  }
  Tensor next() override { return loader_->next().images; }
  nlohmann::json position() const override { return loader_->state().to_string(); }
  void restore(const nlohmann::json& position) override {
    DCAE_CHECK(position.is_string(), "data: cannot resume shards from position ", position.dump());
    loader_.reset();  // stop the old workers first
    loader_ = std::make_unique<datasets::Loader>(options_, datasets::LoaderState::parse(position.get<std::string>()));
  }
  Tensor eval_images() override {
    // Whole images: short side scaled to the resolution, centre crop, no flip, in shard order.
    datasets::LoaderOptions o = options_;
    o.shards = eval_shards_;
    o.batch_size = spec_.eval_images;
    o.resize = true;
    o.random_crop = o.horizontal_flip = o.shuffle = false;
    o.rank = 0, o.world_size = 1, o.drop_last = false, o.workers = 1, o.prefetch = 1;
    datasets::Loader eval(o);
    return eval.next().images;
  }
  std::string summary() const override {
    return "shards: " + std::to_string(loader_->dataset_size()) + " training images in " +
           std::to_string(options_.shards.size()) + " shard(s), evaluation from " + eval_shards_.front() +
           (eval_shards_.size() > 1 ? " and " + std::to_string(eval_shards_.size() - 1) + " more" : "");
  }

 private:
  DataSpec spec_;
  datasets::LoaderOptions options_;
  std::vector<std::string> eval_shards_;
  std::unique_ptr<datasets::Loader> loader_;
};

}  // namespace

std::unique_ptr<ImageSource> make_shard_source(const DataSpec& spec) {
  DCAE_CHECK(spec.recipe != nullptr, "the shard source reads data.* from a recipe");
  return std::make_unique<ShardSource>(spec);
}
std::unique_ptr<ImageSource> make_folder_source(const DataSpec& spec) {
  DCAE_CHECK(spec.recipe != nullptr, "the folder source reads data.* from a recipe");
  return FolderSource::make(spec);
}
std::unique_ptr<ImageSource> make_synthetic_source(const DataSpec& spec) {
  return std::make_unique<SyntheticSource>(spec);
}

Tensor synthetic_image(uint64_t seed, int64_t index, int64_t size) {
  // 24 uniforms per image from Philox at a fixed offset: the picture depends on (seed, index) only.
  Generator gen(seed);
  gen.set_state(seed, static_cast<uint64_t>(index) * 8);
  const std::vector<double> q = rand({24}, gen, DType::f64).to_vector<double>();
  std::vector<float> pixels(static_cast<size_t>(size * size * 3));
  for (int64_t y = 0; y < size; ++y)
    for (int64_t x = 0; x < size; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        const double u = static_cast<double>(x) / size, v = static_cast<double>(y) / size;
        double value = q[c] * u + q[3 + c] * v - 0.5;
        for (int disc = 0; disc < 2; ++disc) {  // soft-edged coloured discs
          const double* d = q.data() + 6 + disc * 9;
          const double dx = u - d[0], dy = v - d[1], radius = 0.1 + 0.25 * d[2];
          value += (2 * d[3 + c] - 1) / (1 + std::exp((std::sqrt(dx * dx + dy * dy) - radius) * 40));
        }
        pixels[static_cast<size_t>((y * size + x) * 3 + c)] = static_cast<float>(std::tanh(value));
      }
  return from_vector(pixels, {size, size, 3});
}

}  // namespace dcae::trainer
