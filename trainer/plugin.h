// Plugins: shared libraries that register factories (optimizers, schedules, models, losses, datasets) and recipe
// keys. A plugin exports
//
//   extern "C" int dcae_plugin_register_v3(dcae::trainer::PluginApi* api) {
//     if (!dcae::trainer::plugin_api_compatible(api)) return 1;
//     api->registries->schedules.add("my_schedule", ...);
//     return 0;
//   }
//
// and is built against the same dcae headers as the host, linking no dcae library itself: its references resolve
// to the host executable, which must export its symbols (CMake ENABLE_EXPORTS / -rdynamic). A plugin is loaded
// once and never unloaded (its code backs the registered factories).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "trainer/recipe_schema.h"
#include "trainer/registries.h"

namespace dcae::trainer {

// Bump on any change to PluginApi, Registries or the factory signatures; the entry point's name carries it.
// v2: Registries gained models, losses and datasets. v3: denoisers, diffusion objectives and samplers, latent datasets.
inline constexpr int kPluginApiVersion = 3;

struct PluginApi {
  int api_version = kPluginApiVersion;
  size_t struct_size = sizeof(PluginApi);  // catches headers that differ without a version bump
  Registries* registries = nullptr;
  RecipeSchema* schema = nullptr;  // where plugins declare the recipe keys their factories read
  const char* plugin_path = nullptr;
};

// For the plugin side: the host's API is the one this plugin was compiled against.
inline bool plugin_api_compatible(const PluginApi* api) {
  return api != nullptr && api->api_version == kPluginApiVersion && api->struct_size == sizeof(PluginApi);
}

// dlopens `path` and calls its dcae_plugin_register_v3. Errors name the file and dlerror(), a plugin built for
// another API version, a non-zero return or an exception thrown by the plugin. Loading the same file into the same
// registries twice is a no-op. Returns true when the plugin was newly loaded.
bool load_plugin(const std::string& path, Registries& registries, RecipeSchema& schema);
void load_plugins(const std::vector<std::string>& paths, Registries& registries, RecipeSchema& schema);

}  // namespace dcae::trainer

extern "C" {
// The entry point a plugin defines (declared here so the signature is checked when the plugin compiles).
int dcae_plugin_register_v3(dcae::trainer::PluginApi* api);
}
