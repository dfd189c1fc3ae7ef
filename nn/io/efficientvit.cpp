#include "nn/io/efficientvit.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

namespace dcae::nn {

namespace fs = std::filesystem;

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A fused 1x1 conv weight [rows, cols, 1, 1], checked, read as [rows, cols].
Tensor read_pointwise(const SafetensorsFile& file, const std::string& name) {
  const Tensor w = file.load(name);
  return w.reshape({w.size(0), w.size(1)});
}

void check_pointwise(const SafetensorsEntry& e, int64_t row_multiple) {
  DCAE_CHECK(e.shape.size() == 4 && e.shape[2] == 1 && e.shape[3] == 1 && e.shape[0] % row_multiple == 0,
             "original DC-AE tensor '", e.name, "' has shape ", shape_str(e.shape), ", expected a 1x1 conv weight [",
             row_multiple == 3 ? "3*inner" : "out", ", in, 1, 1]");
}

}  // namespace

bool is_efficientvit_checkpoint(const SafetensorsFile& file) {
  return file.contains("decoder.stages.1.op_list.0.main.conv.conv.bias");
}

std::string detect_efficientvit_model(const SafetensorsFile& file) {
  DCAE_CHECK(is_efficientvit_checkpoint(file), "'", file.path(),
             "' is not an original (efficientvit) DC-AE checkpoint: it has no tensor "
             "'decoder.stages.1.op_list.0.main.conv.conv.bias'");
  if (file.contains("encoder.project_in.conv.bias")) return "dc-ae-f32c32-sana-1.0";
  const std::string latent_key = "decoder.project_in.main.conv.weight";
  DCAE_CHECK(file.contains(latent_key), "'", file.path(), "' has no '", latent_key,
             "', so its latent width (and DC-AE family) cannot be detected; name the model explicitly");
  const Shape& shape = file.entry(latent_key).shape;
  DCAE_CHECK(shape.size() == 4, "'", file.path(), "': '", latent_key, "' has shape ", shape_str(shape),
             ", expected a conv weight");
  if (shape[1] == 32) return "dc-ae-f32c32-mix-1.0";
  if (shape[1] == 128) return "dc-ae-f64c128-mix-1.0";
  return "dc-ae-f128c512-mix-1.0";
}

std::string efficientvit_to_diffusers_name(const std::string& original, const dcae_model::DcaeConfig& config) {
  // A stage-0 depth of 0 puts a resampling block (whose conv is ".conv") in the stem / head.
  const bool stem_resamples = config.encoder_layers_per_block.at(0) == 0;
  const bool head_resamples = config.decoder_layers_per_block.at(0) == 0;
  std::string name = original;
  // Wrappers (ResidualBlock.main, OpSequential.op_list) vanish; block parts get their diffusers names.
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"main.", ""}, {"op_list.", ""}, {"context_module", "attn"}, {"local_module", "conv_out"}})
    replace_all(name, from, to);
  // Multi-scale branch s: aggreg.s.0 (depthwise) and aggreg.s.1 (grouped 1x1).
  static const std::regex aggregate_in(R"(aggreg\.(\d+)\.0)"), aggregate_out(R"(aggreg\.(\d+)\.1)");
  name = std::regex_replace(name, aggregate_in, "to_qkv_multiscale.$1.proj_in");
  name = std::regex_replace(name, aggregate_out, "to_qkv_multiscale.$1.proj_out");
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"depth_conv.conv", "conv_depth"},
           {"inverted_conv.conv", "conv_inverted"},
           {"point_conv.conv", "conv_point"},
           {"point_conv.norm", "norm"},
           {"conv.conv.", "conv."},
           {"conv1.conv", "conv1"},
           {"conv2.conv", "conv2"},
           {"conv2.norm", "norm"},
           {"proj.norm", "norm_out"},
           {"encoder.project_in.conv", stem_resamples ? "encoder.conv_in.conv" : "encoder.conv_in"},
           {"encoder.project_out.0.conv", "encoder.conv_out"},
           {"encoder.stages", "encoder.down_blocks"},
           {"decoder.project_in.conv", "decoder.conv_in"},
           {"decoder.project_out.0", "decoder.norm_out"},
           {"decoder.project_out.2.conv", head_resamples ? "decoder.conv_out.conv" : "decoder.conv_out"},
           {"decoder.stages", "decoder.up_blocks"}})
    replace_all(name, from, to);
  return name;
}

CheckpointIndex efficientvit_checkpoint_index(const SafetensorsFile& file, const dcae_model::DcaeConfig& config) {
  CheckpointIndex index;
  auto add = [&](const std::string& name, CheckpointTensor tensor, const std::string& original) {
    DCAE_CHECK(index.emplace(name, std::move(tensor)).second, "original DC-AE checkpoint '", file.path(),
               "': two tensors map to '", name, "' (the second is '", original, "')");
  };
  for (const std::string& original : file.names()) {
    const SafetensorsEntry& e = file.entry(original);
    const std::string name = efficientvit_to_diffusers_name(original, config);
    const std::string qkv_suffix = ".qkv.conv.weight", proj_suffix = ".proj.conv.weight";
    if (ends_with(name, qkv_suffix)) {
      // The fused qkv conv's three row blocks become to_q, to_k, to_v (no reordering; see spec §3.4 on heads).
      check_pointwise(e, 3);
      const std::string parent = name.substr(0, name.size() - qkv_suffix.size());
      const int64_t rows = e.shape[0] / 3, cols = e.shape[1];
      const char* parts[] = {".to_q.weight", ".to_k.weight", ".to_v.weight"};
      for (int64_t part = 0; part < 3; ++part) {
        add(parent + parts[part],
            CheckpointTensor{{rows, cols}, e.dtype,
                             [&file, original, part, rows] {
                               return read_pointwise(file, original).narrow(0, part * rows, rows).contiguous();
                             }},
            original);
      }
    } else if (ends_with(name, proj_suffix)) {
      check_pointwise(e, 1);
      add(name.substr(0, name.size() - proj_suffix.size()) + ".to_out.weight",
          CheckpointTensor{{e.shape[0], e.shape[1]}, e.dtype, [&file, original] { return read_pointwise(file, original); }},
          original);
    } else {
      add(name, CheckpointTensor{e.shape, e.dtype, [&file, original] { return file.load(original); }}, original);
    }
  }
  return index;
}

namespace {

fs::path weights_path(const std::string& path) {
  return fs::is_directory(path) ? fs::path(path) / "model.safetensors" : fs::path(path);
}

std::unique_ptr<dcae_model::AutoencoderDC> load_into_new_model(const SafetensorsFile& file,
                                                               const dcae_model::DcaeConfig& config, DType dtype) {
  InitOptions init;
  init.dtype = dtype;
  init.random_init = false;  // every weight comes from the file
  auto model = std::make_unique<dcae_model::AutoencoderDC>(config, init);
  load_state(*model, efficientvit_checkpoint_index(file, config), file.path() + " (original DC-AE naming)");
  model->eval();
  return model;
}

}  // namespace

std::unique_ptr<dcae_model::AutoencoderDC> load_efficientvit_checkpoint(const std::string& path,
                                                                        const std::string& model_name, DType dtype) {
  const fs::path weights = weights_path(path);
  DCAE_CHECK(fs::exists(weights), "original DC-AE checkpoint '", weights.string(), "' does not exist");
  SafetensorsFile file(weights.string());
  std::string name = model_name;
  const fs::path config_json = weights.parent_path() / "config.json";
  if (name.empty() && fs::is_directory(path) && fs::exists(config_json)) {
    std::ifstream in(config_json);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("model_name") && j["model_name"].is_string())
      name = j["model_name"].get<std::string>();
  }
  if (name.empty()) name = detect_efficientvit_model(file);
  return load_into_new_model(file, dcae_model::published_config(name), dtype);
}

std::unique_ptr<dcae_model::AutoencoderDC> load_efficientvit_checkpoint(const std::string& path,
                                                                        const dcae_model::DcaeConfig& config,
                                                                        DType dtype) {
  const fs::path weights = weights_path(path);
  DCAE_CHECK(fs::exists(weights), "original DC-AE checkpoint '", weights.string(), "' does not exist");
  SafetensorsFile file(weights.string());
  return load_into_new_model(file, config, dtype);
}

}  // namespace dcae::nn
