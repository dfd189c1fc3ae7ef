#include "nn/diffusion/zoo.h"

#include <functional>
#include <map>

#include "nn/diffusion/dit.h"
#include "nn/diffusion/uvit.h"

namespace dcae::nn::diffusion {

namespace {

struct Size {
  int64_t depth, hidden_size, num_heads;
  bool uvit;
};

const std::map<std::string, Size>& sizes() {
  static const std::map<std::string, Size> table = {
      {"dit-s", {12, 384, 6, false}},      {"dit-b", {12, 768, 12, false}},   {"dit-l", {24, 1024, 16, false}},
      {"dit-xl", {28, 1152, 16, false}},   {"uvit-s", {12, 512, 8, true}},    {"uvit-h", {28, 1152, 16, true}},
      {"uvit-2b", {28, 2048, 32, true}},   {"usit-h", {28, 1152, 16, true}},  {"usit-2b", {28, 2048, 32, true}},
  };
  return table;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// Applies each key of `overrides` through the matching setter; unknown keys and wrong JSON types are errors.
using Setter = std::function<void(const nlohmann::json&)>;
void apply_overrides(const std::string& model, const nlohmann::json& overrides,
                     const std::map<std::string, Setter>& setters) {
  DCAE_CHECK(overrides.is_null() || overrides.is_object(), "diffusion model '", model,
             "': overrides must be a JSON object, got ", overrides.dump());
  if (overrides.is_null()) return;
  std::vector<std::string> known;
  for (const auto& [key, setter] : setters) known.push_back(key);
  for (const auto& [key, value] : overrides.items()) {
    const auto it = setters.find(key);
    DCAE_CHECK(it != setters.end(), "diffusion model '", model, "': unknown override '", key, "' (known: ",
               joined(known), ")");
    try {
      it->second(value);
    } catch (const nlohmann::json::exception&) {
      DCAE_FAIL("diffusion model '", model, "': override '", key, "' has the wrong type: ", value.dump());
    }
  }
}

int64_t as_int(const nlohmann::json& v) {
  if (!v.is_number_integer()) throw nlohmann::json::type_error::create(302, "integer expected", nullptr);
  return v.get<int64_t>();
}

}  // namespace

std::vector<std::string> diffusion_model_names() {
  std::vector<std::string> names;
  for (const auto& [name, size] : sizes()) names.push_back(name);
  return names;
}

std::unique_ptr<Denoiser> make_diffusion_model(const std::string& name, const DenoiserShape& shape,
                                               const nlohmann::json& overrides, const InitOptions& init) {
  const auto it = sizes().find(name);
  DCAE_CHECK(it != sizes().end(), "unknown diffusion model '", name, "' (known: ", joined(diffusion_model_names()),
             ")");
  const Size& size = it->second;
  if (size.uvit) {
    UViTConfig c;
    c.shape = shape;
    c.depth = size.depth, c.hidden_size = size.hidden_size, c.num_heads = size.num_heads;
    apply_overrides(name, overrides,
                    {{"patch_size", [&](const auto& v) { c.patch_size = as_int(v); }},
                     {"hidden_size", [&](const auto& v) { c.hidden_size = as_int(v); }},
                     {"depth", [&](const auto& v) { c.depth = as_int(v); }},
                     {"num_heads", [&](const auto& v) { c.num_heads = as_int(v); }},
                     {"mlp_ratio", [&](const auto& v) { c.mlp_ratio = v.template get<double>(); }},
                     {"qkv_bias", [&](const auto& v) { c.qkv_bias = v.template get<bool>(); }},
                     {"mlp_time_embed", [&](const auto& v) { c.mlp_time_embed = v.template get<bool>(); }},
                     {"activation", [&](const auto& v) { c.activation = v.template get<std::string>(); }}});
    return std::make_unique<UViT>(c, init);
  }
  DiTConfig c;
  c.shape = shape;
  c.depth = size.depth, c.hidden_size = size.hidden_size, c.num_heads = size.num_heads;
  apply_overrides(name, overrides,
                  {{"patch_size", [&](const auto& v) { c.patch_size = as_int(v); }},
                   {"hidden_size", [&](const auto& v) { c.hidden_size = as_int(v); }},
                   {"depth", [&](const auto& v) { c.depth = as_int(v); }},
                   {"num_heads", [&](const auto& v) { c.num_heads = as_int(v); }},
                   {"mlp_ratio", [&](const auto& v) { c.mlp_ratio = v.template get<double>(); }},
                   {"learn_sigma", [&](const auto& v) { c.learn_sigma = v.template get<bool>(); }},
                   {"frequency_embedding_size", [&](const auto& v) { c.frequency_embedding_size = as_int(v); }}});
  return std::make_unique<DiT>(c, init);
}

}  // namespace dcae::nn::diffusion
