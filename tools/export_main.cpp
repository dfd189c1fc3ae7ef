// dcae-export: writes a DC-AE as a diffusers AutoencoderDC folder (config.json + diffusion_pytorch_model.safetensors,
// loadable by AutoencoderDC.from_pretrained) or as one plain safetensors file. The weights come from a fresh
// initialisation (--init random --seed S) or from a checkpoint (ours, or the original efficientvit naming, which is
// detected by its key names), including the checkpoint folders dcae-trainer writes (sharded ones are consolidated).
#include <glog/logging.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "dist/sharded_checkpoint.h"
#include "nn/io/diffusers.h"
#include "nn/io/efficientvit.h"
#include "tools/common/cli.h"

namespace {

using namespace dcae;
namespace po = tools::po;
using nn::dcae_model::AutoencoderDC;
using nn::dcae_model::DcaeConfig;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  DCAE_CHECK(in.good(), "cannot read config '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// --model NAME or --config config.json; `required` false allows neither (then the checkpoint must tell).
bool config_from_options(const po::variables_map& vm, bool required, DcaeConfig& config, std::string& described) {
  const bool by_name = vm.count("model") != 0, by_file = vm.count("config") != 0;
  DCAE_CHECK(!(by_name && by_file), "give either --model or --config, not both");
  if (by_name) {
    config = nn::dcae_model::published_config(vm["model"].as<std::string>());
    described = vm["model"].as<std::string>();
    return true;
  }
  if (by_file) {
    const std::string path = vm["config"].as<std::string>();
    try {
      config = nn::dcae_model::config_from_json(read_file(path));
    } catch (const Error& e) {
      DCAE_FAIL("'", path, "': ", e.what());
    }
    described = path;
    return true;
  }
  DCAE_CHECK(!required, "name the architecture with --model NAME or --config config.json");
  return false;
}

DType output_dtype(const std::string& name) {
  if (name == "f32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  if (name == "f16") return DType::f16;
  DCAE_FAIL("--dtype must be f32, bf16 or f16, got '", name, "'");
}

// A sharded checkpoint folder (dcae-trainer with dist.strategy = "fsdp", any number of ranks): its "model.*"
// tensors reassembled from every rank's rows.
std::unique_ptr<AutoencoderDC> consolidated_model(const po::variables_map& vm, const std::string& dir) {
  DcaeConfig config;
  std::string described;
  config_from_options(vm, true, config, described);
  const dist::ShardedManifest manifest = dist::read_sharded_manifest(dir);  // no COMPLETE / bad manifest: error
  nn::CheckpointIndex index;
  auto tensors = std::make_shared<std::map<std::string, Tensor>>();
  for (auto& [name, full] : dist::consolidate_sharded_checkpoint(dir)) {
    if (name.rfind("model.", 0) != 0) continue;  // optimizer slots and EMA shadows
    const std::string model_name = name.substr(6);
    (*tensors)[model_name] = full;
    index[model_name] = {full.shape(), full.dtype(), [tensors, model_name] { return tensors->at(model_name); }};
  }
  DCAE_CHECK(!index.empty(), "sharded checkpoint '", dir, "' holds no model.* tensors");
  nn::InitOptions init;
  init.random_init = false;
  auto model = std::make_unique<AutoencoderDC>(config, init);
  nn::load_state(*model, index, dir);
  LOG(INFO) << "consolidated " << dir << " (written by " << manifest.world_size << " rank(s)) into " << described;
  return model;
}

std::unique_ptr<AutoencoderDC> build_model(const po::variables_map& vm) {
  const bool random = vm.count("init") != 0, from_checkpoint = vm.count("checkpoint") != 0;
  DCAE_CHECK(random != from_checkpoint, "give exactly one weight source: --init random or --checkpoint FILE");
  DcaeConfig config;
  std::string described;
  if (random) {
    DCAE_CHECK(vm["init"].as<std::string>() == "random", "--init only knows 'random', got '",
               vm["init"].as<std::string>(), "'");
    config_from_options(vm, true, config, described);
    Generator gen(vm["seed"].as<uint64_t>());
    nn::InitOptions init;
    init.generator = &gen;
    LOG(INFO) << "initialising " << described << " randomly (seed " << vm["seed"].as<uint64_t>() << ")";
    return std::make_unique<AutoencoderDC>(config, init);
  }
  std::string path = vm["checkpoint"].as<std::string>();
  if (std::filesystem::is_directory(path)) {
    if (std::filesystem::exists(std::filesystem::path(path) / "manifest.json")) return consolidated_model(vm, path);
    // A training checkpoint folder (dcae-trainer, dist.strategy = "ddp"): its model file.
    path = (std::filesystem::path(path) / "model.safetensors").string();
  }
  DCAE_CHECK(std::filesystem::is_regular_file(path), "checkpoint '", path, "' does not exist");
  nn::SafetensorsFile file(path);
  const bool original = nn::is_efficientvit_checkpoint(file);
  if (!config_from_options(vm, !original, config, described)) {
    described = nn::detect_efficientvit_model(file);
    config = nn::dcae_model::published_config(described);
    LOG(INFO) << "detected " << described << " from the checkpoint's keys (pass --model to pick in vs mix)";
  }
  nn::InitOptions init;
  init.random_init = false;
  auto model = std::make_unique<AutoencoderDC>(config, init);
  if (original) {
    nn::load_state(*model, nn::efficientvit_checkpoint_index(file, config), path + " (original DC-AE naming)");
  } else {
    nn::load_state(*model, file);
  }
  LOG(INFO) << "loaded " << path << " into " << described << (original ? " (renamed from the efficientvit naming)" : "");
  return model;
}

int run(const po::variables_map& vm) {
  const std::string format = vm["format"].as<std::string>(), out = vm["out"].as<std::string>();
  DCAE_CHECK(format == "diffusers" || format == "safetensors", "--format must be diffusers or safetensors, got '",
             format, "'");
  const DType dtype = output_dtype(vm["dtype"].as<std::string>());
  auto model = build_model(vm);
  if (format == "diffusers") {
    nn::save_diffusers_folder(*model, out, dtype, vm["variant"].as<std::string>());
    LOG(INFO) << "wrote diffusers folder " << out << " (" << model->state().size() << " tensors, "
              << model->num_parameters() << " parameters, " << dtype_name(dtype) << ")";
  } else {
    nn::save_state_safetensors(*model, out, dtype);
    LOG(INFO) << "wrote " << out << " (" << model->state().size() << " tensors, " << dtype_name(dtype) << ")";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("dcae-export options");
  options.add_options()("model", po::value<std::string>(), "published configuration, e.g. dc-ae-f32c32-in-1.0")(
      "config", po::value<std::string>(), "architecture from a diffusers config.json instead of --model")(
      "init", po::value<std::string>(), "'random': a fresh PyTorch-style initialisation")(
      "seed", po::value<uint64_t>()->default_value(0), "seed for --init random")(
      "checkpoint", po::value<std::string>(),
      "weights from a .safetensors file (ours or original efficientvit names), a dcae-trainer checkpoint folder, or "
      "a sharded (fsdp) checkpoint folder, which is consolidated")(
      "out", po::value<std::string>()->required(), "output folder (diffusers) or .safetensors file (safetensors)")(
      "format", po::value<std::string>()->default_value("diffusers"), "diffusers | safetensors")(
      "dtype", po::value<std::string>()->default_value("f32"), "stored float type: f32 | bf16 | f16")(
      "variant", po::value<std::string>()->default_value(""),
      "diffusers weight variant, e.g. fp16 -> diffusion_pytorch_model.fp16.safetensors");
  return dcae::tools::run_tool(
      argc, argv,
      "dcae-export: writes a DC-AE as a diffusers AutoencoderDC folder or a plain safetensors file.\n"
      "  dcae-export --model dc-ae-f32c32-in-1.0 --init random --seed 0 --out DIR\n"
      "  dcae-export --checkpoint FILE.safetensors|CHECKPOINT_DIR --model NAME|--config config.json --out DIR [--dtype bf16]",
      options, run);
}
