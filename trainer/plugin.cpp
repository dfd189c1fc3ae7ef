#include "trainer/plugin.h"

#include <dlfcn.h>

#include <filesystem>
#include <mutex>
#include <set>

namespace dcae::trainer {

namespace {
using EntryPoint = int (*)(PluginApi*);
const std::string kEntryPoint = "dcae_plugin_register_v" + std::to_string(kPluginApiVersion);
}  // namespace

bool load_plugin(const std::string& path, Registries& registries, RecipeSchema& schema) {
  static std::mutex mutex;
  static std::set<std::pair<std::string, const Registries*>> loaded;  // (file, registries) already registered
  std::lock_guard<std::mutex> lock(mutex);
  std::error_code ec;
  DCAE_CHECK(std::filesystem::is_regular_file(path, ec), "plugin '", path, "' not found");
  const std::string canonical = std::filesystem::canonical(path).string();
  if (loaded.count({canonical, &registries})) return false;

  dlerror();
  void* handle = dlopen(canonical.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    DCAE_FAIL("cannot load plugin '", path, "': ", why ? why : "unknown dlopen error");
  }
  dlerror();
  auto entry = reinterpret_cast<EntryPoint>(dlsym(handle, kEntryPoint.c_str()));
  if (entry == nullptr) {
    const char* why = dlerror();
    const std::string reason = why ? why : "symbol is null";
    for (int v = 1; v <= 9; ++v) {  // another version: say so rather than just "symbol not found"
      const std::string other = "dcae_plugin_register_v" + std::to_string(v);
      if (v != kPluginApiVersion && dlsym(handle, other.c_str()) != nullptr)
        DCAE_FAIL("plugin '", path, "' is built for plugin API v", v, " (exports ", other, "); this trainer supports v",
                  kPluginApiVersion);
    }
    DCAE_FAIL("plugin '", path, "' exports no ", kEntryPoint, ": ", reason);
  }
  PluginApi api;
  api.registries = &registries;
  api.schema = &schema;
  api.plugin_path = canonical.c_str();
  int code = 0;
  try {
    code = entry(&api);
  } catch (const std::exception& e) {
    DCAE_FAIL("plugin '", path, "' failed while registering: ", e.what());
  }
  DCAE_CHECK(code == 0, "plugin '", path, "' refused to register (", kEntryPoint, " returned ", code,
             "; a plugin built against other dcae headers returns non-zero from plugin_api_compatible)");
  loaded.insert({canonical, &registries});  // the handle stays open for the life of the process
  return true;
}

void load_plugins(const std::vector<std::string>& paths, Registries& registries, RecipeSchema& schema) {
  for (const std::string& path : paths) load_plugin(path, registries, schema);
}

}  // namespace dcae::trainer
