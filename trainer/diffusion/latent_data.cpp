#include "trainer/diffusion/latent_data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "core/tensor/philox.h"
#include "datasets/latent_shard.h"
#include "datasets/sampler.h"
#include "nn/module.h"
#include "trainer/recipe.h"

namespace dcae::trainer::diffusion {

namespace fs = std::filesystem;

namespace {

// Samples by global index, read in epoch order: every rank takes its share of each epoch's permutation.
class IndexedLatentSource : public LatentSource {
 public:
  IndexedLatentSource(const LatentDataSpec& spec, bool shuffle) : spec_(spec), shuffle_(shuffle) {}

  LatentBatch next() override {
    std::vector<Tensor> latents;
    std::vector<int64_t> labels;
    for (int64_t i = 0; i < spec_.batch_size; ++i) {
      if (order_.empty() || cursor_ >= static_cast<int64_t>(order_.size())) {
        if (!order_.empty()) ++epoch_;
        start_epoch();
        cursor_ = 0;
      }
      auto [latent, label] = load(order_[static_cast<size_t>(cursor_++)]);
      DCAE_CHECK(label >= 0 && label < spec_.num_classes, "latent data: label ", label, " of sample ",
                 order_[cursor_ - 1], " is outside [0, model.num_classes = ", spec_.num_classes,
                 ") (unlabelled shards store -1)");
      latents.push_back(latent);
      labels.push_back(label);
    }
    const Shape shape = latent_shape();
    Tensor batch = empty({spec_.batch_size, shape[0], shape[1], shape[2]}, DType::f32);
    for (int64_t i = 0; i < spec_.batch_size; ++i) batch.select(0, i).copy_(latents[static_cast<size_t>(i)]);
    const double rescale = spec_.scaling_factor / stored_scaling_factor();
    if (rescale != 1.0) {
      float* data = batch.data<float>();
      for (int64_t i = 0; i < batch.numel(); ++i) data[i] = static_cast<float>(data[i] * rescale);
    }
    return {batch, from_vector(labels, {spec_.batch_size})};
  }

  nlohmann::json position() const override { return {{"epoch", epoch_}, {"cursor", cursor_}}; }
  void restore(const nlohmann::json& position) override {
    DCAE_CHECK(position.is_object() && position.contains("epoch") && position.contains("cursor"),
               "latent data: checkpoint position ", position.dump(), " is not {epoch, cursor}");
    epoch_ = position.at("epoch").get<int64_t>();
    cursor_ = position.at("cursor").get<int64_t>();
    start_epoch();
  }

 protected:
  virtual std::pair<Tensor, int64_t> load(int64_t index) const = 0;
  LatentDataSpec spec_;

 private:
  void start_epoch() {
    order_ = datasets::rank_samples(size(), spec_.seed, epoch_, shuffle_, spec_.rank, spec_.world_size, true);
    DCAE_CHECK(!order_.empty(), "latent data: ", size(), " samples leave none for rank ", spec_.rank, " of ",
               spec_.world_size);
  }
  bool shuffle_;
  int64_t epoch_ = 0, cursor_ = 0;
  std::vector<int64_t> order_;
};

class ShardLatentSource : public IndexedLatentSource {
 public:
  ShardLatentSource(const LatentDataSpec& spec, const std::vector<std::string>& files)
      : IndexedLatentSource(spec, spec.recipe->get<bool>("data.shuffle")) {
    for (const std::string& file : files) {
      readers_.push_back(std::make_unique<datasets::LatentShardReader>(file));
      const auto& reader = *readers_.back();
      DCAE_CHECK(reader.latent_shape() == readers_.front()->latent_shape(), "latent shard '", file, "' holds ",
                 shape_str(reader.latent_shape()), " latents, but '", files.front(), "' holds ",
                 shape_str(readers_.front()->latent_shape()));
      DCAE_CHECK(reader.attributes().scaling_factor == readers_.front()->attributes().scaling_factor,
                 "latent shard '", file, "' has scaling factor ", reader.attributes().scaling_factor, ", but '",
                 files.front(), "' has ", readers_.front()->attributes().scaling_factor);
      for (int64_t label : reader.labels())
        DCAE_CHECK(label >= 0, "latent shard '", file, "' has unlabelled latents (label -1); class-conditional ",
                   "diffusion needs labels (encode class-folder shards)");
      starts_.push_back(total_);
      total_ += reader.size();
    }
  }
  Shape latent_shape() const override { return readers_.front()->latent_shape(); }
  int64_t size() const override { return total_; }
  double stored_scaling_factor() const override { return readers_.front()->attributes().scaling_factor; }
  std::string summary() const override {
    std::ostringstream out;
    out << "latent_shards: " << total_ << " latents " << shape_str(latent_shape()) << " in " << readers_.size()
        << " shard(s), stored x" << stored_scaling_factor() << ", trained x" << spec_.scaling_factor;
    return out.str();
  }

 protected:
  std::pair<Tensor, int64_t> load(int64_t index) const override {
    const size_t shard = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), index) - starts_.begin()) - 1;
    const int64_t local = index - starts_[shard];
    return {readers_[shard]->latent(local), readers_[shard]->label(local)};
  }

 private:
  static std::string shape_str(const Shape& s) {
    std::ostringstream out;
    out << "[" << s[0] << ", " << s[1] << ", " << s[2] << "]";
    return out.str();
  }
  std::vector<std::unique_ptr<datasets::LatentShardReader>> readers_;
  std::vector<int64_t> starts_;
  int64_t total_ = 0;
};

class SyntheticLatentSource : public IndexedLatentSource {
 public:
  explicit SyntheticLatentSource(const LatentDataSpec& spec)
      : IndexedLatentSource(spec, spec.recipe->get<bool>("data.shuffle")),
        count_(spec.recipe->get<int64_t>("data.synthetic_latents")),
        channels_(spec.recipe->get<int64_t>("data.latent_channels")),
        side_(spec.recipe->get<int64_t>("data.latent_size")) {}
  Shape latent_shape() const override { return {side_, side_, channels_}; }
  int64_t size() const override { return count_; }
  double stored_scaling_factor() const override { return 1.0; }
  std::string summary() const override {
    std::ostringstream out;
    out << "synthetic: " << count_ << " latents [" << side_ << ", " << side_ << ", " << channels_ << "] of "
        << spec_.num_classes << " classes, x" << spec_.scaling_factor;
    return out.str();
  }

 protected:
  std::pair<Tensor, int64_t> load(int64_t index) const override {
    LatentBatch one = synthetic_latent(spec_.seed, index, channels_, side_, spec_.num_classes);
    return {one.latents, one.labels.item<int64_t>()};
  }

 private:
  int64_t count_, channels_, side_;
};

}  // namespace

Tensor synthetic_class_pattern(int64_t label, int64_t channels, int64_t size) {
  Generator class_gen(0x5eed0000ULL + static_cast<uint64_t>(label));  // the same in every stream
  const std::vector<float> draws = rand({channels * 3}, class_gen, DType::f32).to_vector<float>();
  std::vector<double> values(static_cast<size_t>(size * size * channels));
  const double two_pi = 2.0 * M_PI;
  for (int64_t y = 0; y < size; ++y)
    for (int64_t x = 0; x < size; ++x)
      for (int64_t c = 0; c < channels; ++c) {
        const double fx = 2.0 * draws[c * 3] - 1.0, fy = 2.0 * draws[c * 3 + 1] - 1.0, phase = two_pi * draws[c * 3 + 2];
        values[static_cast<size_t>((y * size + x) * channels + c)] =
            1.3 * std::sin(two_pi * (fx * x + fy * y) / static_cast<double>(size) + phase);
      }
  return from_doubles(values, {size, size, channels});
}

LatentBatch synthetic_latent(uint64_t seed, int64_t index, int64_t channels, int64_t size, int64_t num_classes) {
  const int64_t label = index % num_classes;
  Tensor latent = synthetic_class_pattern(label, channels, size);
  Generator sample_gen(seed * 1000003ULL + static_cast<uint64_t>(index));
  latent.add_(randn({size, size, channels}, sample_gen, DType::f32), 0.3);
  return {latent, from_vector(std::vector<int64_t>{label}, {1})};
}

std::vector<std::string> latent_shard_files(const std::string& pattern) {
  DCAE_CHECK(!pattern.empty(), "data.latent_shards is empty: name latent shards (a file, a glob or a folder)");
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_directory(pattern, ec)) {
    for (const auto& entry : fs::recursive_directory_iterator(pattern))
      if (entry.is_regular_file() && entry.path().extension() == ".h5") files.push_back(entry.path().string());
  } else if (pattern.find_first_of("*?") != std::string::npos) {
    const fs::path path(pattern);
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    if (fs::is_directory(dir, ec))
      for (const auto& entry : fs::directory_iterator(dir))
        if (entry.is_regular_file() && nn::glob_match(path.filename().string(), entry.path().filename().string()))
          files.push_back(entry.path().string());
  } else if (fs::is_regular_file(pattern, ec)) {
    files.push_back(pattern);
  }
  std::sort(files.begin(), files.end());
  DCAE_CHECK(!files.empty(), "data.latent_shards = '", pattern, "' names no latent shard (.h5) files");
  return files;
}

double stored_scaling_factor(const std::string& pattern) {
  return datasets::LatentShardReader(latent_shard_files(pattern).front()).attributes().scaling_factor;
}

std::unique_ptr<LatentSource> make_latent_shard_source(const LatentDataSpec& spec) {
  return std::make_unique<ShardLatentSource>(spec, latent_shard_files(spec.recipe->get<std::string>("data.latent_shards")));
}

std::unique_ptr<LatentSource> make_synthetic_latent_source(const LatentDataSpec& spec) {
  return std::make_unique<SyntheticLatentSource>(spec);
}

}  // namespace dcae::trainer::diffusion
