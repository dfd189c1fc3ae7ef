// Diffusion transformer training-step throughput on one GPU, to put beside bench/torch_diffusion_peer.py (the same
// network in PyTorch, bf16 autocast) in one run. A step: forward on noisy latents with random timesteps and labels,
// MSE against a target in fp32, backward, AdamW with fp32 masters; weights and compute in bf16.
//   diffusion_model_bench --model uvit-h --in-channels 128 --input-size 8 --batch 128    (UViT-H on f64c128 latents)
//   diffusion_model_bench --model dit-xl --in-channels 32 --input-size 16 --batch 64     (DiT-XL on f32c32 latents)
#include <glog/logging.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <iostream>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "core/tensor/philox.h"
#include "nn/diffusion/zoo.h"
#include "ops/loss.h"
#include "ops/view.h"
#include "trainer/optim/optimizer.h"
#include "trainer/registries.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/caching_allocator.h"
#include "core/tensor/cuda/stream.h"
#endif

namespace {

using namespace dcae;
namespace po = boost::program_options;

int run(const po::variables_map& vm) {
#ifndef DCAE_WITH_CUDA
  std::cerr << "diffusion_model_bench needs a CUDA build\n";
  return 1;
#else
  DCAE_CHECK(cuda_available(), "diffusion_model_bench needs a GPU");
  const Device gpu = Device::cuda(0);
  const std::string name = vm["model"].as<std::string>();
  nn::diffusion::DenoiserShape shape;
  shape.in_channels = vm["in-channels"].as<int64_t>();
  shape.input_size = vm["input-size"].as<int64_t>();
  const int64_t batch = vm["batch"].as<int64_t>();
  const int iters = vm["iters"].as<int>();
  nn::InitOptions shapes_only;
  shapes_only.random_init = false;  // filled on the device below (the CPU would take a while for 0.5-1.6 B weights)
  auto model = nn::diffusion::make_diffusion_model(name, shape, nlohmann::json::object(), shapes_only);
  model->to(gpu);
  {
    Generator init_gen(0);
    autograd::NoGradGuard no_grad;
    for (const auto& [pname, p] : model->named_parameters()) {
      if (!p.requires_grad()) continue;  // DiT's sin-cos table is already written
      Tensor value = p;
      normal_(value, 0.0, 0.02, init_gen);
    }
  }
  model->to(DType::bf16);  // weights in bf16; the optimizer keeps fp32 masters
  model->train();
  std::vector<nn::NamedTensor> trainable;
  for (const auto& [pname, p] : model->named_parameters())
    if (p.requires_grad()) trainable.emplace_back(pname, p);
  trainer::OptimizerConfig config;
  config.lr = 1e-4;
  auto optim = trainer::make_optimizer(trainable, config);
  std::cout << name << ": " << model->num_parameters(true) << " trainable parameters, latents " << shape.in_channels
            << "x" << shape.input_size << "x" << shape.input_size << ", batch " << batch << std::endl;

  Generator gen(1);
  Tensor x = empty({batch, shape.input_size, shape.input_size, shape.in_channels}, DType::f32, gpu);
  normal_(x, 0.0, 1.0, gen);
  const Tensor x16 = x.to(DType::bf16);
  Tensor target = empty({batch, shape.input_size, shape.input_size, model->out_channels()}, DType::f32, gpu);
  normal_(target, 0.0, 1.0, gen);
  Tensor t = empty({batch}, DType::f32, gpu);
  uniform_(t, 0.0, 999.0, gen);
  std::vector<int64_t> ids(batch);
  for (int64_t i = 0; i < batch; ++i) ids[i] = (i * 37) % (shape.num_classes + 1);
  const Tensor labels = from_vector<int64_t>(ids, {batch}).to(gpu);

  double loss_value = 0;
  auto step = [&] {
    const Tensor out = model->forward(x16, t, labels);
    const Tensor loss = ops::mse_loss(ops::cast(out, DType::f32), target);
    autograd::backward(loss);
    optim->step();
    optim->zero_grad();
    return loss;
  };
  for (int i = 0; i < 3; ++i) loss_value = step().item<double>();  // warm-up: plans, moments
  cuda::CachingAllocator& allocator = cuda::caching_allocator(0);
  allocator.reset_peak_stats();
  const cuda::Stream& stream = cuda::current_stream(0);
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    cuda::Event start(true), end(true);
    start.record(stream);
    step();
    end.record(stream);
    end.synchronize();
    times.push_back(start.elapsed_ms(end));
  }
  std::sort(times.begin(), times.end());
  const double ms = times[times.size() / 2];
  const double peak_gib = static_cast<double>(allocator.stats().peak_allocated_bytes) / (1ull << 30);
  std::cout << "| dcae | " << name << " | " << shape.in_channels << "c " << shape.input_size << "x"
            << shape.input_size << " | batch " << batch << " | " << ms << " ms | " << batch / ms * 1e3
            << " img/s | peak " << peak_gib << " GiB | warm-up loss " << loss_value << " |" << std::endl;
  return 0;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  po::options_description options("diffusion_model_bench");
  options.add_options()("help", "this help")(
      "model", po::value<std::string>()->default_value("uvit-h"), "diffusion model name (nn/diffusion/zoo.h)")(
      "in-channels", po::value<int64_t>()->default_value(128), "latent channels")(
      "input-size", po::value<int64_t>()->default_value(8), "latent side")(
      "batch", po::value<int64_t>()->default_value(128), "latents per step")(
      "iters", po::value<int>()->default_value(10), "timed steps (median reported)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, options), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  try {
    return run(vm);
  } catch (const Error& e) {
    std::cerr << "diffusion_model_bench: " << e.what() << "\n";
    return 1;
  }
}
