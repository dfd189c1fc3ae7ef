// dcae-encode: image shards (with manifest.json) -> the latent cache a diffusion model trains on. Every image
// shard becomes one latent shard of the same file name holding encode(image) * scaling_factor (NHWC float32), plus
// optionally the latents of the horizontally flipped images; a manifest.json lists the latent shards.
#include <glog/logging.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "core/autograd/grad_mode.h"
#include "datasets/latent_shard.h"
#include "datasets/manifest.h"
#include "datasets/shard_format.h"
#include "nn/dcae/graphed_runner.h"
#include "nn/io/diffusers.h"
#include "nn/io/efficientvit.h"
#include "ops/elementwise.h"
#include "tools/common/cli.h"

namespace {

using namespace dcae;
using namespace dcae::datasets;
namespace po = tools::po;
namespace fs = std::filesystem;
using nn::dcae_model::AutoencoderDC;
using nn::dcae_model::GraphedRunner;

struct EncodeOptions {
  std::string model_dir, shards_dir, output_dir;
  int64_t batch = 16;
  bool flip = false, overwrite = false;
  Device device = Device::cpu();
  DType dtype = DType::f32;
  double scaling_factor = 0;  // 0: the model config's
  double progress_seconds = 5;
  bool cuda_graph = false;  // replay each batch shape's encode from a CUDA graph
};

// A diffusers folder, or an original efficientvit one (model.safetensors + config.json naming the model).
std::unique_ptr<AutoencoderDC> load_model(const std::string& dir, DType dtype) {
  DCAE_CHECK(fs::is_directory(dir), "model folder '", dir, "' does not exist");
  const bool original = fs::exists(fs::path(dir) / "model.safetensors") &&
                        !fs::exists(fs::path(dir) / nn::diffusers_weights_name());
  std::unique_ptr<AutoencoderDC> model;
  if (original) {
    model = nn::load_efficientvit_checkpoint(dir, "", dtype);
  } else {
    nn::DiffusersLoadOptions load;
    load.dtype = dtype;
    model = nn::load_diffusers_folder(dir, load);
  }
  model->eval();
  return model;
}

// An empty output folder, or (with --overwrite) one emptied of an earlier run's shards and manifest.
void prepare_output(const EncodeOptions& options) {
  const fs::path dir(options.output_dir);
  DCAE_CHECK(fs::absolute(dir).lexically_normal() != fs::absolute(options.shards_dir).lexically_normal(),
             "--output must not be the --shards folder '", options.shards_dir, "'");
  if (!fs::exists(dir)) {
    fs::create_directories(dir);
    return;
  }
  DCAE_CHECK(fs::is_directory(dir), "output '", options.output_dir, "' exists and is not a folder");
  const bool empty = fs::directory_iterator(dir) == fs::directory_iterator();
  DCAE_CHECK(empty || options.overwrite, "output folder '", options.output_dir,
             "' is not empty; refusing to overwrite it (pass --overwrite to replace an earlier run)");
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kManifestFile || name == kClassesFile || entry.path().extension() == ".h5" ||
                      entry.path().extension() == ".partial";
    if (ours && entry.is_regular_file()) fs::remove(entry.path());
  }
}

// u8 images [B, H, W, 3] (optionally mirrored left-right) -> f32 [B, H, W, 3] in [-1, 1].
Tensor to_model_input(const std::vector<uint8_t>& pixels, const Shape& batch_shape, bool mirror) {
  const int64_t rows = batch_shape[0] * batch_shape[1], width = batch_shape[2];
  std::vector<float> scaled(pixels.size());
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t x = 0; x < width; ++x) {
      const int64_t from = (row * width + (mirror ? width - 1 - x : x)) * 3, to = (row * width + x) * 3;
      for (int64_t c = 0; c < 3; ++c) scaled[to + c] = pixels[from + c] / 127.5f - 1.0f;
    }
  return from_vector(scaled, batch_shape);
}

// encode(images) * scaling_factor, back on the CPU as f32 [B, h, w, C].
Tensor encode_scaled(GraphedRunner& model, const Tensor& images, const EncodeOptions& options, double scale) {
  const Tensor latent = model(images.to(options.device).to(options.dtype));
  return ops::mul(latent.to(DType::f32), scale).to(Device::cpu()).contiguous();
}

class Progress {
 public:
  Progress(int64_t total, double every_seconds) : total_(total), every_(every_seconds) {}
  void update(int64_t done) {
    const double now = seconds();
    if (done < total_ && now - last_ < every_) return;
    last_ = now;
    const double rate = done / std::max(now, 1e-9);
    LOG(INFO) << "dcae-encode: " << done << "/" << total_ << " images, " << static_cast<int64_t>(rate * 10) / 10.0
              << " images/s, ETA " << static_cast<int64_t>((total_ - done) / std::max(rate, 1e-9)) << " s";
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  int64_t total_;
  double every_, last_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Encodes one image shard into output_dir/<same file name>; returns the number of latents written.
int64_t encode_shard(GraphedRunner& model, const ShardReader& images, const std::string& output_path,
                     const EncodeOptions& options, double scale, int64_t& done, Progress& progress) {
  const Shape image_shape = images.image_shape();
  const int64_t f = model.model().config().spatial_compression();
  DCAE_CHECK(image_shape[0] % f == 0 && image_shape[1] % f == 0, "shard '", images.path(), "': images of ",
             shape_str(image_shape), " do not divide by the model's compression factor ", f);
  LatentShardAttributes attributes;
  attributes.scaling_factor = scale;
  attributes.model = options.model_dir;
  attributes.source_shard = images.path();
  attributes.flipped = options.flip;
  LatentShardWriter writer(output_path, attributes);
  const int64_t image_bytes = image_shape[0] * image_shape[1] * 3;
  for (int64_t start = 0; start < images.size(); start += options.batch) {
    const int64_t count = std::min(options.batch, images.size() - start);
    std::vector<uint8_t> pixels(static_cast<size_t>(count * image_bytes));
    for (int64_t i = 0; i < count; ++i) {
      const Tensor image = images.image(start + i);
      std::copy_n(image.data<uint8_t>(), image_bytes, pixels.data() + i * image_bytes);
    }
    const Shape batch_shape = {count, image_shape[0], image_shape[1], 3};
    const Tensor latents = encode_scaled(model, to_model_input(pixels, batch_shape, false), options, scale);
    Tensor mirrored;
    if (options.flip) mirrored = encode_scaled(model, to_model_input(pixels, batch_shape, true), options, scale);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t label = images.label(start + i);
      const std::string& name = images.name(start + i);
      writer.append(latents.select(0, i), label, name);
      if (options.flip) writer.append(mirrored.select(0, i), label, name + kFlipSuffix);
    }
    done += count;
    progress.update(done);
  }
  const int64_t written = writer.count();
  writer.close();
  return written;
}

EncodeOptions parse_options(const po::variables_map& vm) {
  EncodeOptions options;
  options.model_dir = vm["model-dir"].as<std::string>();
  options.shards_dir = vm["shards"].as<std::string>();
  options.output_dir = vm["output"].as<std::string>();
  options.batch = vm["batch"].as<int64_t>();
  DCAE_CHECK(options.batch > 0, "--batch must be positive, got ", options.batch);
  options.flip = vm.count("flip") > 0;
  options.overwrite = vm.count("overwrite") > 0;
  options.device = Device::parse(vm["device"].as<std::string>());
  DCAE_CHECK(options.device.is_cpu() || cuda_available(), "--device ", options.device.str(),
             " asked for, but this build has no CUDA or no GPU is visible");
  const std::string dtype = vm["dtype"].as<std::string>();
  DCAE_CHECK(dtype == "f32" || dtype == "bf16", "--dtype must be f32 or bf16, got '", dtype, "'");
  options.dtype = dtype == "f32" ? DType::f32 : DType::bf16;
  if (vm.count("scaling-factor")) {
    options.scaling_factor = vm["scaling-factor"].as<double>();
    DCAE_CHECK(options.scaling_factor > 0, "--scaling-factor must be positive, got ", options.scaling_factor);
  }
  options.progress_seconds = vm["progress-seconds"].as<double>();
  options.cuda_graph = vm.count("cuda-graph") > 0;
  DCAE_CHECK(!options.cuda_graph || options.device.is_cuda(), "--cuda-graph needs --device cuda");
  return options;
}

int run(const po::variables_map& vm) {
  const EncodeOptions options = parse_options(vm);
  const Manifest images = read_manifest(options.shards_dir);
  DCAE_CHECK(!images.shards.empty(), "'", options.shards_dir, "/", kManifestFile, "' lists no shards");
  for (const ShardEntry& entry : images.shards) {
    const std::string problem = check_shard_file(options.shards_dir, entry);
    DCAE_CHECK(problem.empty(), problem);
  }
  auto model = load_model(options.model_dir, options.dtype);
  model->to(options.device);
  const double scale = options.scaling_factor > 0 ? options.scaling_factor : model->config().scaling_factor;
  prepare_output(options);
  LOG(INFO) << "dcae-encode: " << images.total() << " images in " << images.shards.size() << " shards from '"
            << options.shards_dir << "' with f" << model->config().spatial_compression() << "c"
            << model->config().latent_channels << " from '" << options.model_dir << "' (" << dtype_name(options.dtype)
            << " on " << options.device.str() << ", batch " << options.batch << ", scaling factor " << scale
            << (options.flip ? ", with flipped copies" : "") << ") -> '" << options.output_dir << "'";

  autograd::NoGradGuard no_grad;
  Manifest latents = images;
  latents.storage = "latents";
  latents.codec = "";
  latents.source = options.shards_dir;
  latents.shards.clear();
  Progress progress(images.total(), options.progress_seconds);
  int64_t done = 0;
  GraphedRunner runner(*model, GraphedRunner::Direction::encode, options.cuda_graph);
  for (const ShardEntry& entry : images.shards) {
    const ShardReader reader((fs::path(options.shards_dir) / entry.file).string());
    DCAE_CHECK(reader.size() == entry.count, "shard '", reader.path(), "' holds ", reader.size(),
               " images but the manifest lists ", entry.count);
    const std::string output_path = (fs::path(options.output_dir) / entry.file).string();
    fs::create_directories(fs::path(output_path).parent_path());
    const int64_t written = encode_shard(runner, reader, output_path, options, scale, done, progress);
    latents.shards.push_back(describe_shard(options.output_dir, entry.file, written));
  }
  if (fs::exists(fs::path(options.shards_dir) / kClassesFile))
    write_classes(options.output_dir, read_classes(options.shards_dir));
  write_manifest(options.output_dir, latents);
  LOG(INFO) << "dcae-encode: wrote " << latents.total() << " latents in " << latents.shards.size()
            << " shards to '" << options.output_dir << "' in " << progress.seconds() << " s";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("dcae-encode options");
  options.add_options()
      ("model-dir", po::value<std::string>()->required(),
       "diffusers AutoencoderDC folder (or an original efficientvit one: model.safetensors + config.json)")
      ("shards", po::value<std::string>()->required(), "image shard folder with manifest.json (from dcae-shard)")
      ("output", po::value<std::string>()->required(), "output folder for the latent shards and manifest.json")
      ("batch", po::value<int64_t>()->default_value(16), "images per encoder call")
      ("flip", "also store the latents of the horizontally flipped images (names suffixed \"#flip\")")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu or cuda[:N]")
      ("dtype", po::value<std::string>()->default_value("f32"), "model compute type: f32 or bf16")
      ("scaling-factor", po::value<double>(), "multiply latents by this instead of the model config's")
      ("overwrite", "replace the latent shards of an earlier run in --output")
      ("progress-seconds", po::value<double>()->default_value(5.0), "seconds between progress lines")
      ("cuda-graph", "GPU only: run each batch shape's encoder from a CUDA graph after one eager warm-up call");
  return dcae::tools::run_tool(argc, argv,
                               "dcae-encode: encode image shards into a latent cache (NHWC float32 latents times "
                               "the scaling factor, one latent shard per image shard).\n"
                               "  dcae-encode --model-dir DIR --shards DIR --output DIR [--batch N] [--flip] "
                               "[--device cpu|cuda] [--dtype f32|bf16] [--cuda-graph] [--overwrite]",
                               options, run);
}
