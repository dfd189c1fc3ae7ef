// dcae-reconstruct: encodes and decodes PNG images with a DC-AE from a model folder, writes the reconstructions
// as PNG and prints PSNR and SSIM per image and on average (uint8, evaluation protocol of spec §12).
#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/autograd/grad_mode.h"
#include "datasets/png.h"
#include "nn/dcae/tiling.h"
#include "nn/io/diffusers.h"
#include "nn/io/efficientvit.h"
#include "tools/common/cli.h"
#include "trainer/image_metrics.h"

namespace {

using namespace dcae;
namespace po = tools::po;
namespace fs = std::filesystem;

std::vector<fs::path> list_inputs(const std::string& input) {
  DCAE_CHECK(fs::exists(input), "input '", input, "' does not exist");
  if (!fs::is_directory(input)) return {fs::path(input)};
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(input)) {
    std::string ext = entry.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    if (entry.is_regular_file() && ext == ".png") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  DCAE_CHECK(!files.empty(), "input folder '", input, "' has no .png files");
  return files;
}

// Centre crop of a u8 [H, W, 3] image to multiples of f.
Tensor crop_to_multiple(const Tensor& image, int64_t f, const std::string& name) {
  const int64_t h = image.size(0) / f * f, w = image.size(1) / f * f;
  DCAE_CHECK(h > 0 && w > 0, "image '", name, "' (", image.size(0), "x", image.size(1),
             ") is smaller than the model's compression factor ", f);
  return image.narrow(0, (image.size(0) - h) / 2, h).narrow(1, (image.size(1) - w) / 2, w).contiguous();
}

// u8 [H, W, 3] -> f32 NHWC [1, H, W, 3] in [-1, 1].
Tensor to_model_input(const Tensor& image) {
  const auto pixels = image.to_vector<float>();
  std::vector<float> scaled(pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) scaled[i] = pixels[i] / 127.5f - 1.0f;
  return from_vector(scaled, {1, image.size(0), image.size(1), image.size(2)});
}

// A diffusers folder, or an original efficientvit one (model.safetensors + config.json naming the model).
std::unique_ptr<nn::dcae_model::AutoencoderDC> load_model(const std::string& dir, const std::string& variant) {
  const bool original = fs::exists(fs::path(dir) / "model.safetensors") &&
                        !fs::exists(fs::path(dir) / nn::diffusers_weights_name(variant));
  if (original) return nn::load_efficientvit_checkpoint(dir);
  nn::DiffusersLoadOptions load;
  load.variant = variant;
  return nn::load_diffusers_folder(dir, load);
}

int run(const po::variables_map& vm) {
  const auto start = std::chrono::steady_clock::now();
  auto model = load_model(vm["model-dir"].as<std::string>(), vm["variant"].as<std::string>());
  const int64_t f = model->config().spatial_compression();
  const int64_t tile = vm["tile"].as<int64_t>();
  int64_t stride = vm["tile-stride"].as<int64_t>();
  DCAE_CHECK(tile >= 0 && stride >= 0, "--tile and --tile-stride must not be negative");
  // Default overlap: diffusers' 64 of 512 pixels, rounded to the compression factor (no overlap for one-f tiles).
  if (tile > 0 && stride == 0) stride = tile > f ? tile - std::max(f, tile / 8 / f * f) : tile;
  const auto tiles = nn::dcae_model::TileOptions::square(tile, stride);
  if (tile > 0) nn::dcae_model::validate_tiling(tiles, f);
  LOG(INFO) << "model f" << f << "c" << model->config().latent_channels << " (" << model->num_parameters()
            << " parameters) from " << vm["model-dir"].as<std::string>()
            << (tile > 0 ? ", tiles " + std::to_string(tile) + " stride " + std::to_string(stride) : std::string());

  const fs::path out_dir(vm["output"].as<std::string>());
  fs::create_directories(out_dir);
  std::ofstream table(out_dir / "metrics.tsv");
  table << "image\theight\twidth\tpsnr_db\tssim\n";
  autograd::NoGradGuard no_grad;
  double psnr_sum = 0, ssim_sum = 0;
  int64_t count = 0;
  for (const fs::path& path : list_inputs(vm["input"].as<std::string>())) {
    const Tensor original = crop_to_multiple(datasets::read_png(path.string()), f, path.string());
    const Tensor input = to_model_input(original);
    const Tensor latent = tile > 0 ? nn::dcae_model::tiled_encode(*model, input, tiles) : model->encode(input);
    const Tensor output = tile > 0 ? nn::dcae_model::tiled_decode(*model, latent, tiles) : model->decode(latent);
    const Tensor recon_batch = trainer::to_uint8_images(output);  // the protocol's uint8 quantisation
    const Tensor original_batch = original.unsqueeze(0);
    datasets::write_png((out_dir / (path.stem().string() + ".png")).string(), recon_batch.select(0, 0));
    const double psnr = trainer::psnr_u8(original_batch, recon_batch)[0];
    const double ssim =
        original.size(0) >= 11 && original.size(1) >= 11 ? trainer::ssim_u8(original_batch, recon_batch)[0] : NAN;
    psnr_sum += psnr;
    ssim_sum += ssim;
    ++count;
    std::printf("%s  %lldx%lld  PSNR %.3f dB  SSIM %.4f\n", path.filename().c_str(),
                static_cast<long long>(original.size(0)), static_cast<long long>(original.size(1)), psnr, ssim);
    table << path.filename().string() << "\t" << original.size(0) << "\t" << original.size(1) << "\t" << psnr << "\t"
          << ssim << "\n";
  }
  std::printf("average over %lld images  PSNR %.3f dB  SSIM %.4f\n", static_cast<long long>(count), psnr_sum / count,
              ssim_sum / count);
  std::fflush(stdout);
  LOG(INFO) << "wrote " << count << " reconstructions and metrics.tsv to " << out_dir.string() << " in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("dcae-reconstruct options");
  options.add_options()("model-dir", po::value<std::string>()->required(),
      "diffusers AutoencoderDC folder (or an original efficientvit one: model.safetensors + config.json)")(
      "input", po::value<std::string>()->required(), "a PNG image or a folder of them")(
      "output", po::value<std::string>()->required(), "folder for the reconstructions (same names) and metrics.tsv")(
      "tile", po::value<int64_t>()->default_value(0), "tiled encode/decode with this tile size in pixels (0: off)")(
      "tile-stride", po::value<int64_t>()->default_value(0), "tile stride in pixels (0: tile - tile/8, aligned)")(
      "variant", po::value<std::string>()->default_value(""), "diffusers weight variant, e.g. fp16");
  return dcae::tools::run_tool(argc, argv,
                               "dcae-reconstruct: DC-AE reconstructions of PNG images with PSNR and SSIM (uint8; "
                               "images are centre-cropped to a multiple of the compression factor).",
                               options, run);
}
