// dcae-parity: a debugging/test tool for comparing against PyTorch. Runs one forward pass of a DC-AE on the images
// of an input .safetensors file and writes what a reference implementation can be checked against:
//   latents, reconstructions            NHWC, the model's dtype
//   loss                                mean |decode(encode(x)) - x| (when shapes match)
//   grad.<parameter>                    d loss / d parameter, for every parameter (--grad)
//   state.<buffer>                      every buffer after the pass (BatchNorm running stats in --train mode)
#include <glog/logging.h>

#include <fstream>
#include <iterator>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "nn/dcae/tiling.h"
#include "nn/io/diffusers.h"
#include "nn/io/efficientvit.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "tools/common/cli.h"

namespace {

using namespace dcae;
namespace po = tools::po;

std::unique_ptr<nn::dcae_model::AutoencoderDC> load_model(const po::variables_map& vm, DType dtype) {
  const bool folder = vm.count("model-dir") != 0, original = vm.count("efficientvit") != 0;
  DCAE_CHECK(folder != original, "give exactly one of --model-dir DIR or --efficientvit FILE");
  if (folder) {
    nn::DiffusersLoadOptions options;
    options.dtype = dtype;
    options.variant = vm["variant"].as<std::string>();
    return nn::load_diffusers_folder(vm["model-dir"].as<std::string>(), options);
  }
  const std::string path = vm["efficientvit"].as<std::string>();
  if (vm.count("config")) {
    std::ifstream in(vm["config"].as<std::string>());
    DCAE_CHECK(in.good(), "cannot read config '", vm["config"].as<std::string>(), "'");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return nn::load_efficientvit_checkpoint(path, nn::dcae_model::config_from_json(text), dtype);
  }
  return nn::load_efficientvit_checkpoint(path, vm.count("model") ? vm["model"].as<std::string>() : "", dtype);
}

int run(const po::variables_map& vm) {
  const DType dtype = dtype_from_name(vm["dtype"].as<std::string>());
  auto model = load_model(vm, dtype);
  const bool train = vm.count("train") != 0, want_grad = vm.count("grad") != 0;
  model->train(train);
  nn::SafetensorsFile input(vm["input"].as<std::string>());
  const Tensor images = input.load("images").to(dtype);
  const int64_t tile = vm["tile"].as<int64_t>();
  const auto tiles = nn::dcae_model::TileOptions::square(tile, vm["tile-stride"].as<int64_t>());
  LOG(INFO) << "images " << images.str() << (train ? ", train mode" : ", eval mode")
            << (tile > 0 ? ", tiled " + std::to_string(tile) + "/" + std::to_string(tiles.stride_height) : "");

  std::unique_ptr<autograd::NoGradGuard> no_grad;
  if (!want_grad) no_grad = std::make_unique<autograd::NoGradGuard>();
  const Tensor latents = tile > 0 ? nn::dcae_model::tiled_encode(*model, images, tiles) : model->encode(images);
  const Tensor recon = tile > 0 ? nn::dcae_model::tiled_decode(*model, latents, tiles) : model->decode(latents);
  // A tiled encode of an image that is not a multiple of f returns a cropped latent: no loss then.
  const bool same_shape = recon.shape() == images.shape();
  DCAE_CHECK(same_shape || !want_grad, "--grad needs the reconstruction ", recon.str(), " to match the images ",
             images.str(), " (sizes must be multiples of ", model->config().spatial_compression(), ")");
  std::vector<nn::NamedTensor> out{{"latents", latents.detach()}, {"reconstructions", recon.detach()}};
  if (same_shape) {
    const Tensor loss = ops::mean(ops::abs(ops::sub(recon, images)));
    if (want_grad) autograd::backward(loss);
    out.emplace_back("loss", loss.detach());
    LOG(INFO) << "loss " << loss.item<double>();
  }
  for (const auto& [name, t] : model->named_buffers()) out.emplace_back("state." + name, t);
  if (want_grad) {
    for (const auto& [name, p] : model->named_parameters()) {
      DCAE_CHECK(p.grad().defined(), "parameter '", name, "' got no gradient");
      out.emplace_back("grad." + name, p.grad());
    }
  }
  nn::write_safetensors(vm["output"].as<std::string>(), out);
  LOG(INFO) << "wrote " << out.size() << " tensors to "
            << vm["output"].as<std::string>();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("dcae-parity options");
  options.add_options()("model-dir", po::value<std::string>(), "diffusers AutoencoderDC folder")(
      "efficientvit", po::value<std::string>(), "original efficientvit model.safetensors instead of --model-dir")(
      "config", po::value<std::string>(), "with --efficientvit: architecture from a diffusers config.json")(
      "model", po::value<std::string>(), "with --efficientvit: published configuration name (default: detect)")(
      "variant", po::value<std::string>()->default_value(""), "diffusers weight variant")(
      "input", po::value<std::string>()->required(), ".safetensors with 'images' NHWC [N, H, W, C] in [-1, 1]")(
      "output", po::value<std::string>()->required(), "output .safetensors")(
      "grad", "also write the gradient of mean |decode(encode(x)) - x| w.r.t. every parameter")(
      "train", "run in train mode (BatchNorm uses and updates batch statistics)")(
      "tile", po::value<int64_t>()->default_value(0), "tiled encode/decode with this tile size (0: off)")(
      "tile-stride", po::value<int64_t>()->default_value(0), "tile stride in pixels (with --tile)")(
      "dtype", po::value<std::string>()->default_value("f32"), "model dtype: f32 | f64 | bf16 | f16");
  return dcae::tools::run_tool(argc, argv,
                               "dcae-parity: one DC-AE forward (and backward) pass on given images, written to a "
                               "safetensors file for comparison with PyTorch/diffusers (a test tool).",
                               options, run);
}
