// dcae-smoke: the embedded default job until the trainer lands. Builds a tiny DC-AE (ResBlocks, an EfficientViT
// stage, both shortcut kinds), trains it for a few steps on images it generates, and shows the loss falling.
#include <glog/logging.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "core/tensor/philox.h"
#include "datasets/png.h"
#include "nn/dcae/model.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "tools/common/cli.h"

namespace {

using namespace dcae;

nn::dcae_model::DcaeConfig tiny_config() {
  nn::dcae_model::DcaeConfig c = nn::dcae_model::published_config("dc-ae-f32c32-in-1.0");
  c.latent_channels = 8;
  c.encoder_block_out_channels = c.decoder_block_out_channels = {32, 64, 64};
  c.encoder_block_types = c.decoder_block_types = {"ResBlock", "ResBlock", "EfficientViTBlock"};
  c.encoder_layers_per_block = c.decoder_layers_per_block = {1, 1, 1};
  c.encoder_qkv_multiscales = c.decoder_qkv_multiscales = {{}, {}, {5}};
  c.decoder_norm_types = {"batch_norm", "rms_norm", "rms_norm"};
  c.decoder_act_fns = {"relu", "silu", "silu"};
  return c;
}

// Smooth images in [-1, 1]: a colour gradient plus a few soft coloured discs, NHWC.
Tensor synthetic_images(int64_t n, int64_t size, Generator& gen) {
  const Tensor params = rand({n, 24}, gen, DType::f64);
  const auto p = params.to_vector<double>();
  std::vector<float> pixels(n * size * size * 3);
  for (int64_t i = 0; i < n; ++i) {
    const double* q = p.data() + i * 24;
    for (int64_t y = 0; y < size; ++y)
      for (int64_t x = 0; x < size; ++x)
        for (int64_t c = 0; c < 3; ++c) {
          const double u = static_cast<double>(x) / size, v = static_cast<double>(y) / size;
          double value = q[c] * u + q[3 + c] * v - 0.5;
          for (int disc = 0; disc < 2; ++disc) {
            const double* d = q + 6 + disc * 9;
            const double dx = u - d[0], dy = v - d[1], r = 0.1 + 0.25 * d[2];
            value += (2 * d[3 + c] - 1) / (1 + std::exp((std::sqrt(dx * dx + dy * dy) - r) * 40));
          }
          pixels[((i * size + y) * size + x) * 3 + c] = static_cast<float>(std::tanh(value));
        }
  }
  return from_vector(pixels, {n, size, size, 3});
}

double psnr(const Tensor& a, const Tensor& b) {
  const double mse = ops::mean(ops::square(ops::sub(a, b))).item<double>() / 4.0;  // [-1,1] -> [0,1] scale
  return 10 * std::log10(1.0 / std::max(mse, 1e-12));
}

// Adam with bias correction, in place on the parameters (temporary; the trainer brings AdamW).
struct Adam {
  std::vector<Tensor> params, m, v;
  double lr, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  int64_t t = 0;
  Adam(std::vector<Tensor> p, double lr_) : params(std::move(p)), lr(lr_) {
    for (auto& x : params) m.push_back(zeros_like(x)), v.push_back(zeros_like(x));
  }
  void step() {
    ++t;
    autograd::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor& g = params[i].grad();
      if (!g.defined()) continue;
      m[i] = ops::add(ops::mul(m[i], b1), ops::mul(g, 1 - b1));
      v[i] = ops::add(ops::mul(v[i], b2), ops::mul(ops::square(g), 1 - b2));
      const Tensor m_hat = ops::div(m[i], 1 - std::pow(b1, t)), v_hat = ops::div(v[i], 1 - std::pow(b2, t));
      Tensor update = ops::div(m_hat, ops::add(ops::sqrt(v_hat), eps));
      Tensor(params[i]).add_(update, -lr);
      params[i].set_grad(Tensor());
    }
  }
};

int run(const tools::po::variables_map& vm) {
  const auto out_dir = std::filesystem::path(vm["out"].as<std::string>());
  std::filesystem::create_directories(out_dir);
  const int64_t steps = vm["steps"].as<int64_t>(), batch = vm["batch"].as<int64_t>(), size = 32;
  Generator gen(vm["seed"].as<uint64_t>());
  nn::InitOptions init;
  init.generator = &gen;
  nn::dcae_model::AutoencoderDC model(tiny_config(), init);
  LOG(INFO) << "tiny DC-AE: " << model.num_parameters() << " parameters, f" << model.config().spatial_compression()
            << "c" << model.config().latent_channels << ", " << size << "x" << size << " images, batch " << batch;
  Adam adam(model.trainable_parameters(), vm["lr"].as<double>());
  const Tensor eval_images = synthetic_images(8, size, gen);
  std::ofstream metrics(out_dir / "metrics.jsonl");
  const auto start = std::chrono::steady_clock::now();
  double first_loss = 0, last_loss = 0;
  for (int64_t step = 1; step <= steps; ++step) {
    const Tensor images = synthetic_images(batch, size, gen);
    const Tensor loss = ops::mean(ops::abs(ops::sub(model.forward(images), images)));
    autograd::backward(loss);
    adam.step();
    last_loss = loss.item<double>();
    if (step == 1) first_loss = last_loss;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics << "{\"step\": " << step << ", \"l1\": " << last_loss << "}\n";
    if (step % 5 == 0 || step == steps) {
      LOG(INFO) << "step " << step << "/" << steps << "  l1 " << last_loss << "  " << step * batch / seconds
                << " img/s  ETA " << static_cast<int>(seconds / step * (steps - step)) << " s  host memory "
                << CpuAllocator::instance().peak_bytes() / (1 << 20) << " MiB peak";
    }
  }
  model.eval();
  autograd::NoGradGuard no_grad;
  const Tensor recon = model.forward(eval_images);
  LOG(INFO) << "eval PSNR " << psnr(recon, eval_images) << " dB; l1 " << first_loss << " -> " << last_loss;
  datasets::write_png((out_dir / "reconstructions.png").string(),
                      datasets::image_grid(ops::clamp(recon, -1, 1), 8));
  datasets::write_png((out_dir / "originals.png").string(), datasets::image_grid(eval_images, 8));
  LOG(INFO) << "wrote " << (out_dir / "reconstructions.png").string() << " and metrics.jsonl";
  return last_loss < first_loss ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  dcae::tools::po::options_description options("dcae-smoke options");
  options.add_options()("out", dcae::tools::po::value<std::string>()->default_value("runs/smoke"), "output folder")(
      "steps", dcae::tools::po::value<int64_t>()->default_value(60), "training steps")(
      "batch", dcae::tools::po::value<int64_t>()->default_value(8), "images per step")(
      "lr", dcae::tools::po::value<double>()->default_value(2e-3), "Adam learning rate")(
      "seed", dcae::tools::po::value<uint64_t>()->default_value(0), "random seed");
  return dcae::tools::run_tool(argc, argv,
                               "dcae-smoke: trains a tiny DC-AE on generated images for a few steps (the embedded "
                               "default job until the trainer lands).",
                               options, run);
}
