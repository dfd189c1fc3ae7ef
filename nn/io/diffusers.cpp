#include "nn/io/diffusers.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace dcae::nn {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxListed = 40;  // names listed per category in a mismatch error

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > kMaxListed) out += ", ... (" + std::to_string(names.size() - kMaxListed) + " more)";
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  DCAE_CHECK(in.good(), "cannot read '", path.string(), "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.flush();
  DCAE_CHECK(out.good(), "writing '", path.string(), "' failed (disk full?)");
}

std::vector<NamedTensor> state_as(const Module& model, DType dtype) {
  DCAE_CHECK(is_floating(dtype), "checkpoints store floats as f32, bf16, f16 or f64, not ", dtype_name(dtype));
  std::vector<NamedTensor> out;
  for (const auto& [name, t] : model.state()) out.emplace_back(name, is_floating(t.dtype()) ? t.to(dtype) : t);
  return out;
}

// The folder path without a trailing separator, so ".tmp" suffixes land next to it rather than inside it.
fs::path clean_folder(const std::string& folder) {
  fs::path p = fs::path(folder).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  DCAE_CHECK(!p.empty(), "empty output folder name");
  return p;
}

}  // namespace

CheckpointIndex index_safetensors(const SafetensorsFile& file) {
  CheckpointIndex index;
  for (const std::string& name : file.names()) {
    const SafetensorsEntry& e = file.entry(name);
    index[name] = CheckpointTensor{e.shape, e.dtype, [&file, name] { return file.load(name); }};
  }
  return index;
}

void load_state(Module& model, const CheckpointIndex& checkpoint, const std::string& source) {
  const auto state = model.state();
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> known;
  for (const auto& [name, t] : state) {
    known.insert(name);
    auto it = checkpoint.find(name);
    if (it == checkpoint.end()) {
      if (!ends_with(name, "num_batches_tracked")) missing.push_back(name);
      continue;
    }
    const CheckpointTensor& c = it->second;
    if (c.shape != t.shape())
      mismatched.push_back(name + " (checkpoint " + shape_str(c.shape) + ", model " + shape_str(t.shape()) + ")");
    else if (is_floating(c.dtype) != is_floating(t.dtype()))
      mismatched.push_back(name + " (checkpoint " + dtype_name(c.dtype) + ", model " + dtype_name(t.dtype()) + ")");
  }
  for (const auto& [name, c] : checkpoint)
    if (!known.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string message = "checkpoint '" + source + "' does not match the model (" + std::to_string(state.size()) +
                          " model tensors, " + std::to_string(checkpoint.size()) + " in the checkpoint):";
    if (!missing.empty()) message += " missing keys [" + join_names(missing) + "];";
    if (!unexpected.empty()) message += " unexpected keys [" + join_names(unexpected) + "];";
    if (!mismatched.empty()) message += " mismatched [" + join_names(mismatched) + "];";
    message.pop_back();
    DCAE_FAIL(message);
  }
  for (const auto& [name, t] : state) {
    auto it = checkpoint.find(name);
    if (it == checkpoint.end()) continue;
    const Tensor value = it->second.read();
    DCAE_CHECK(value.shape() == it->second.shape, "checkpoint '", source, "': tensor '", name, "' read as ",
               value.str(), " but was announced as ", shape_str(it->second.shape));
    assign_in_place(t, value.to(t.device()).to(t.dtype()));
  }
}

void load_state(Module& model, const SafetensorsFile& file) { load_state(model, index_safetensors(file), file.path()); }

std::string diffusers_weights_name(const std::string& variant) {
  std::string name = "diffusion_pytorch_model.";
  if (!variant.empty()) name.append(variant).append(".");
  return name.append("safetensors");
}

std::unique_ptr<dcae_model::AutoencoderDC> load_diffusers_folder(const std::string& folder,
                                                                 const DiffusersLoadOptions& options) {
  const fs::path dir(folder);
  DCAE_CHECK(fs::is_directory(dir), "diffusers model folder '", folder, "' does not exist");
  const fs::path config_path = dir / "config.json";
  DCAE_CHECK(fs::exists(config_path), "diffusers model folder '", folder, "' has no config.json");
  const fs::path weights = dir / diffusers_weights_name(options.variant);
  if (!fs::exists(weights)) {
    DCAE_CHECK(!fs::exists(weights.string() + ".index.json"), "diffusers model folder '", folder,
               "' holds a sharded checkpoint (", weights.filename().string(),
               ".index.json), which dcae does not read; re-save it unsharded (DC-AE is at most 4.5 GB)");
    std::string present;
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".safetensors") present.append(" ").append(entry.path().filename().string());
    DCAE_FAIL("diffusers model folder '", folder, "' has no ", weights.filename().string(),
              present.empty() ? std::string(" (no .safetensors file at all)")
                              : " (it has:" + present + "; pick one with the variant option)");
  }
  dcae_model::DcaeConfig config;
  try {
    config = dcae_model::config_from_json(read_text(config_path));
  } catch (const Error& e) {
    DCAE_FAIL("'", config_path.string(), "': ", e.what());
  }
  InitOptions init;
  init.dtype = options.dtype;
  init.random_init = false;  // every weight comes from the file
  auto model = std::make_unique<dcae_model::AutoencoderDC>(config, init);
  SafetensorsFile file(weights.string());
  load_state(*model, file);
  model->eval();  // as from_pretrained returns it
  return model;
}

void save_diffusers_folder(const dcae_model::AutoencoderDC& model, const std::string& folder, DType dtype,
                           const std::string& variant) {
  const fs::path final_dir = clean_folder(folder);
  if (final_dir.has_parent_path()) fs::create_directories(final_dir.parent_path());
  const std::string pid = std::to_string(::getpid());
  const fs::path temp_dir = final_dir.string() + ".tmp." + pid, old_dir = final_dir.string() + ".old." + pid;
  fs::remove_all(temp_dir);
  fs::create_directories(temp_dir);
  try {
    write_text(temp_dir / "config.json", dcae_model::config_to_json(model.config()));
    write_safetensors((temp_dir / diffusers_weights_name(variant)).string(), state_as(model, dtype),
                      {{"format", "pt"}});
    if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
    fs::rename(temp_dir, final_dir);
  } catch (...) {
    fs::remove_all(temp_dir);
    throw;
  }
  fs::remove_all(old_dir);
}

void save_state_safetensors(const Module& model, const std::string& path, DType dtype) {
  const fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  write_safetensors(path, state_as(model, dtype), {{"format", "pt"}});
}

}  // namespace dcae::nn
