#include "trainer/job_model.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "nn/dcae/model.h"
#include "nn/io/safetensors.h"
#include "trainer/checkpoint.h"

namespace dcae::trainer {

namespace fs = std::filesystem;
using nn::dcae_model::DcaeConfig;

DcaeConfig dcae_config_with_overrides(const std::string& name, const nlohmann::json& overrides) {
  DCAE_CHECK(overrides.is_object(), "model.config must be a table of DC-AE config fields, got ", overrides.dump());
  // Start from the named config as diffusers' config.json, so overrides use the same field names. A custom model
  // is read like a config.json holding just the overrides: per-stage fields it leaves out follow its stage count.
  const bool custom = name == "dc-ae-custom";
  nlohmann::json base = nlohmann::json::parse(nn::dcae_model::config_to_json(
      custom ? nn::dcae_model::config_from_json("{}") : nn::dcae_model::published_config(name)));
  std::vector<std::string> unknown;
  for (const auto& [key, value] : overrides.items()) {
    if (!base.contains(key) || key.front() == '_') unknown.push_back(key);
    base[key] = value;
  }
  if (!unknown.empty()) {
    std::ostringstream known;
    for (const auto& [key, value] : base.items())
      if (key.front() != '_' && overrides.count(key) == 0) known << " " << key;
    std::string names;
    for (const auto& k : unknown) names += (names.empty() ? "" : ", ") + k;
    DCAE_FAIL("model.config: unknown DC-AE config field(s) ", names, "; known:", known.str());
  }
  try {
    return nn::dcae_model::config_from_json(custom ? overrides.dump() : base.dump());
  } catch (const Error& e) {
    DCAE_FAIL("model '", name, "' with model.config ", overrides.dump(), ": ", e.what());
  }
}

TrainModel make_dcae_train_model(const DcaeConfig& config, const std::string& name, const nn::InitOptions& init) {
  auto model = std::make_shared<nn::dcae_model::AutoencoderDC>(config, init);
  TrainModel out;
  out.module = model;
  out.encode = [model](const Tensor& x) { return model->encode(x); };
  out.decode = [model](const Tensor& z) { return model->decode(z); };
  // The output layer is decoder.conv_out: a Conv2d, or an UpBlock whose conv is the last 4-D weight under it.
  for (const auto& [param_name, t] : model->named_parameters())
    if (param_name.rfind("decoder.conv_out.", 0) == 0 && t.dim() == 4) out.last_layer = param_name;
  DCAE_CHECK(!out.last_layer.empty(), "DC-AE model '", name, "' has no decoder.conv_out weight");
  std::ostringstream summary;
  summary << name << ": f" << config.spatial_compression() << "c" << config.latent_channels << ", "
          << config.num_stages() << " stages, " << model->num_parameters() << " parameters";
  out.summary = summary.str();
  return out;
}

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  DCAE_CHECK(in.good(), "cannot read '", path.string(), "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string load_initial_weights(nn::Module& module, const std::string& path, const DcaeConfig* config) {
  std::error_code ec;
  fs::path file = path;
  if (fs::is_directory(path, ec)) {
    const fs::path dir = path;
    if (fs::exists(dir / "diffusion_pytorch_model.safetensors")) {
      file = dir / "diffusion_pytorch_model.safetensors";
      if (config != nullptr && fs::exists(dir / "config.json")) {
        const DcaeConfig theirs = nn::dcae_model::config_from_json(read_text(dir / "config.json"));
        DCAE_CHECK(nn::dcae_model::config_to_json(theirs) == nn::dcae_model::config_to_json(*config),
                   "model.init_from '", path, "': its config.json describes another model than model.name/model.config:\n",
                   nn::dcae_model::config_to_json(theirs));
      }
    } else if (is_complete_checkpoint(path)) {
      file = dir / "model.safetensors";
    } else if (auto latest = latest_complete(path)) {
      file = fs::path(*latest) / "model.safetensors";
    } else {
      DCAE_FAIL("model.init_from '", path, "' is a folder without diffusion_pytorch_model.safetensors, not a complete ",
                "checkpoint and holds no complete checkpoint");
    }
  }
  DCAE_CHECK(fs::is_regular_file(file, ec), "model.init_from: '", file.string(), "' not found");
  nn::SafetensorsFile weights(file.string());
  std::set<std::string> expected;
  for (const auto& [name, t] : module.state()) {
    expected.insert(name);
    DCAE_CHECK(weights.contains(name), "model.init_from '", file.string(), "' lacks tensor '", name, "' (",
               shape_str(t.shape()), ")");
    const nn::SafetensorsEntry& entry = weights.entry(name);
    DCAE_CHECK(entry.shape == t.shape(), "model.init_from '", file.string(), "': tensor '", name, "' has shape ",
               shape_str(entry.shape), ", the model expects ", shape_str(t.shape()));
  }
  for (const std::string& name : weights.names())
    DCAE_CHECK(expected.count(name), "model.init_from '", file.string(), "' holds tensor '", name,
               "', which the model does not have (a different architecture?)");
  for (const auto& [name, t] : module.state()) nn::assign_in_place(t, weights.load(name).to(t.dtype()).to(t.device()));
  return file.string();
}

}  // namespace dcae::trainer
