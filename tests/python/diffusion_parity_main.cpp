// dcae-diffusion-parity: a test tool for the PyTorch parity suite of the diffusion transformers
// (tests/python/test_diffusion_parity.py). Builds a named model from nn/diffusion/zoo.h and either
//   --save-init FILE   writes its own random initialisation (state names = the reference state_dict keys), or
//   --weights FILE --inputs FILE --output FILE
//                      loads the weights (every key must match), runs forward on x (NHWC), t, labels from the
//                      inputs file and backward of sum(output * direction), and writes
//                        output                NHWC prediction
//                        grad.x                d loss / d x
//                        grad.<parameter>      d loss / d parameter, for every trainable parameter
#include <glog/logging.h>

#include <nlohmann/json.hpp>

#include "core/autograd/engine.h"
#include "nn/diffusion/zoo.h"
#include "nn/io/diffusers.h"
#include "nn/io/safetensors.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "tools/common/cli.h"

namespace {

using namespace dcae;
namespace po = tools::po;

int run(const po::variables_map& vm) {
  const DType dtype = dtype_from_name(vm["dtype"].as<std::string>());
  const Device device = vm.count("cuda") ? Device::cuda(0) : Device::cpu();
  nn::diffusion::DenoiserShape shape;
  shape.in_channels = vm["in-channels"].as<int64_t>();
  shape.input_size = vm["input-size"].as<int64_t>();
  shape.num_classes = vm["num-classes"].as<int64_t>();
  nn::InitOptions init;
  init.dtype = dtype;
  Generator generator(vm["seed"].as<uint64_t>());
  init.generator = &generator;
  init.random_init = vm.count("weights") == 0;
  auto model = nn::diffusion::make_diffusion_model(vm["model"].as<std::string>(), shape,
                                                   nlohmann::json::parse(vm["overrides"].as<std::string>()), init);
  if (vm.count("save-init")) {
    nn::write_safetensors(vm["save-init"].as<std::string>(), model->state());
    return 0;
  }
  DCAE_CHECK(vm.count("weights") && vm.count("inputs") && vm.count("output"),
             "give --save-init FILE, or --weights, --inputs and --output");
  nn::load_state(*model, nn::SafetensorsFile(vm["weights"].as<std::string>()));
  model->to(device);
  nn::SafetensorsFile inputs(vm["inputs"].as<std::string>());
  const Tensor x = inputs.load("x").to(dtype).to(device).set_requires_grad(true);
  const Tensor t = inputs.load("t").to(device);
  const Tensor labels = inputs.load("labels").to(device);
  const Tensor direction = inputs.load("direction").to(dtype).to(device);
  const Tensor out = model->forward(x, t, labels);
  autograd::backward(ops::sum(ops::mul(out, direction)));
  std::vector<nn::NamedTensor> result{{"output", out.detach().to(Device::cpu())},
                                      {"grad.x", x.grad().to(Device::cpu())}};
  for (const auto& [name, p] : model->named_parameters()) {
    if (!p.requires_grad()) continue;
    DCAE_CHECK(p.grad().defined(), "parameter '", name, "' got no gradient");
    result.emplace_back("grad." + name, p.grad().to(Device::cpu()));
  }
  nn::write_safetensors(vm["output"].as<std::string>(), result);
  LOG(INFO) << "wrote " << result.size() << " tensors";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("dcae-diffusion-parity options");
  options.add_options()("model", po::value<std::string>()->required(), "diffusion model name (nn/diffusion/zoo.h)")(
      "in-channels", po::value<int64_t>()->required(), "latent channels")(
      "input-size", po::value<int64_t>()->required(), "latent side")(
      "num-classes", po::value<int64_t>()->required(), "classes (the no-class id is this number)")(
      "overrides", po::value<std::string>()->default_value("{}"), "JSON object of config overrides")(
      "seed", po::value<uint64_t>()->default_value(0), "initialisation seed (--save-init)")(
      "save-init", po::value<std::string>(), "write the randomly initialised state to this .safetensors")(
      "weights", po::value<std::string>(), ".safetensors state to load (reference names)")(
      "inputs", po::value<std::string>(), ".safetensors with x [N, H, W, C], t [N], labels [N] i64, direction")(
      "output", po::value<std::string>(), "output .safetensors")(
      "cuda", "run on the first CUDA device")(
      "dtype", po::value<std::string>()->default_value("f32"), "model dtype: f32 | f64 | bf16");
  return dcae::tools::run_tool(argc, argv,
                               "dcae-diffusion-parity: one forward/backward pass of a diffusion transformer for the "
                               "PyTorch parity suite (a test tool).",
                               options, run);
}
