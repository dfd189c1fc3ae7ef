// Training recipes: TOML files with `base = "other.toml"` inheritance (relative to the file, chains allowed, cycles
// an error), merged key by key (the derived file wins; tables merge recursively; arrays are replaced whole), then
// command-line overrides ("optim.lr=1e-4", the value parsed as TOML; a bare word is a string), then validation
// against a RecipeSchema. Every error names the key and where it came from ("file:line" or "--set ...").
//
//   RecipeSource src = resolve_recipe("recipes/tiny.toml", {"optim.lr=1e-3"});
//   load_plugins(plugin_paths(src), ...);            // plugins may extend the schema
//   Recipe recipe = validate_recipe(src, schema);
//   double lr = recipe.get<double>("optim.lr");
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor/error.h"
#include "trainer/recipe_schema.h"

namespace dcae::trainer {

// A merged recipe before validation: values as JSON plus where each key was set.
struct RecipeSource {
  nlohmann::json values = nlohmann::json::object();
  // Dotted key path ("optim.lr", "optim.groups[0].lr") -> "file:line" or "--set optim.lr=1e-4".
  std::map<std::string, std::string> origins;
  std::vector<std::string> files;  // the recipe first, then its bases in order
};

// Reads `path` and its base chain, merges them and applies `overrides` ("key.path=value"). Syntax errors name
// the file and line; a base cycle names the chain.
RecipeSource resolve_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from text (tests, embedded recipes); `name` stands in for a file name; bases resolve from `base_dir`.
RecipeSource resolve_recipe_text(const std::string& text, const std::string& name,
                                 const std::vector<std::string>& overrides = {}, const std::string& base_dir = ".");
// The top-level `plugins` list as written, before validation (plugins may declare schema keys).
std::vector<std::string> plugin_paths(const RecipeSource& source);

class Recipe {
 public:
  Recipe() = default;
  Recipe(nlohmann::json values, std::map<std::string, std::string> origins, std::vector<std::string> files);

  // Typed access to a key ("optim.lr"): bool, int64_t, int, double, std::string, std::vector<double>,
  // std::vector<int64_t>, std::vector<std::string>, nlohmann::json. Errors name the key.
  template <typename T>
  T get(const std::string& key) const {
    const nlohmann::json& node = at(key);
    try {
      if constexpr (std::is_same_v<T, double>) {
        DCAE_CHECK(node.is_number(), "recipe key '", key, "' is ", node.type_name(), ", not a number");
      } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        DCAE_CHECK(node.is_number_integer(), "recipe key '", key, "' is ", node.type_name(), ", not an integer");
      }
      return node.get<T>();
    } catch (const nlohmann::json::exception& e) {
      DCAE_FAIL("recipe key '", key, "' (", origin(key), ") cannot be read as the requested type: ", e.what());
    }
  }
  // Like get, with a fallback when the key has no value (optional keys without a default).
  template <typename T>
  T get_or(const std::string& key, const T& fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }
  bool has(const std::string& key) const;
  const nlohmann::json& at(const std::string& key) const;  // any node, sections included
  // "file:line", "--set ...", or "default" for a value the schema filled in.
  std::string origin(const std::string& key) const;
  // "recipes/a.toml (base recipes/b.toml)" for messages about the recipe as a whole.
  std::string describe_origin() const;

  const nlohmann::json& values() const { return values_; }
  const std::vector<std::string>& files() const { return files_; }
  // The resolved recipe as TOML (defaults filled in), e.g. to save next to the run's outputs.
  std::string to_toml() const;

 private:
  nlohmann::json values_ = nlohmann::json::object();
  std::map<std::string, std::string> origins_;
  std::vector<std::string> files_;
};

// Checks every key against the schema (unknown keys, types, choices, bounds, list lengths), fills in defaults,
// reports missing required keys, then runs the schema's cross-key rules. Throws before any work is done.
Recipe validate_recipe(const RecipeSource& source, const RecipeSchema& schema);

// resolve_recipe + validate_recipe (no plugins).
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {},
                   const RecipeSchema& schema = dcae_recipe_schema());

}  // namespace dcae::trainer
