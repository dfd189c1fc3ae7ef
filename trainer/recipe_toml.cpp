// The TOML side of recipes: parsing files and overrides into JSON with per-key origins, base inheritance, merging,
// and writing a resolved recipe back as TOML. The only file that includes toml++.
#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "trainer/recipe.h"

namespace dcae::trainer {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using Origins = std::map<std::string, std::string>;

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string line_of(const std::string& label, const toml::node& node) {
  const auto& begin = node.source().begin;
  return begin.line > 0 ? label + ":" + std::to_string(begin.line) : label;
}

// Converts a TOML node to JSON, recording "label:line" for every key below `path` (array-of-tables elements as
// "path[i].key").
json to_json(const toml::node& node, const std::string& path, const std::string& label, Origins& origins) {
  if (const toml::table* table = node.as_table()) {
    json out = json::object();
    for (const auto& [key, value] : *table) {
      const std::string child = join_key(path, std::string(key.str()));
      origins[child] = line_of(label, value);
      out[std::string(key.str())] = to_json(value, child, label, origins);
    }
    return out;
  }
  if (const toml::array* array = node.as_array()) {
    json out = json::array();
    for (size_t i = 0; i < array->size(); ++i) {
      const std::string child = path + "[" + std::to_string(i) + "]";
      if ((*array)[i].is_table()) origins[child] = line_of(label, (*array)[i]);
      out.push_back(to_json((*array)[i], child, label, origins));
    }
    return out;
  }
  if (auto v = node.value_exact<int64_t>()) return *v;
  if (auto v = node.value_exact<double>()) return *v;
  if (auto v = node.value_exact<bool>()) return *v;
  if (auto v = node.value_exact<std::string>()) return *v;
  std::ostringstream text;  // dates and times are kept as their TOML text
  node.visit([&](const auto& value) { text << value; });
  return text.str();
}

// Removes the origins of `path` and of everything below it (a replaced value takes its sub-keys with it).
void erase_origins_under(Origins& origins, const std::string& path) {
  for (auto it = origins.lower_bound(path); it != origins.end() && it->first.compare(0, path.size(), path) == 0;) {
    const std::string& key = it->first;
    const bool below = key.size() == path.size() || key[path.size()] == '.' || key[path.size()] == '[';
    it = below ? origins.erase(it) : std::next(it);
  }
}

// Derived values win; tables merge key by key; anything else (arrays included) is replaced whole.
void merge_into(json& base, Origins& base_origins, const json& derived, const std::string& path) {
  for (const auto& [key, value] : derived.items()) {
    const std::string child = join_key(path, key);
    if (base.contains(key) && base[key].is_object() && value.is_object()) {
      merge_into(base[key], base_origins, value, child);
    } else {
      erase_origins_under(base_origins, child);
      base[key] = value;
    }
  }
}

json parse_toml(const std::string& text, const std::string& label, Origins& origins) {
  try {
    toml::table table = toml::parse(text, label);
    return to_json(table, "", label, origins);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    DCAE_FAIL("recipe syntax error in ", label, ":", where.line, ":", where.column, ": ", e.description());
  }
}

std::string read_text(const std::string& path) {
  std::error_code ec;
  DCAE_CHECK(fs::is_regular_file(path, ec), "recipe file '", path, "' not found");
  std::ifstream in(path, std::ios::binary);
  DCAE_CHECK(in.good(), "cannot read recipe file '", path, "'");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Resolves `text` (from `label`) and its base chain into `out`. `chain` holds the canonical paths being resolved,
// to report cycles.
void resolve_into(const std::string& text, const std::string& label, const fs::path& dir, std::vector<std::string>& chain,
                  RecipeSource& out) {
  Origins origins;
  json values = parse_toml(text, label, origins);
  out.files.push_back(label);
  if (values.contains("base")) {
    const json& base = values["base"];
    DCAE_CHECK(base.is_string(), "recipe ", origins["base"], ": 'base' must be a string (a file name), got ",
               base.type_name());
    const fs::path base_path = dir / base.get<std::string>();
    std::error_code ec;
    DCAE_CHECK(fs::is_regular_file(base_path, ec), "recipe ", origins["base"], ": base '", base.get<std::string>(),
               "' not found (looked at ", base_path.string(), ")");
    const std::string canonical = fs::weakly_canonical(base_path).string();
    for (const std::string& seen : chain) {
      if (seen != canonical) continue;
      std::string cycle;
      for (const std::string& link : chain) cycle += link + " -> ";
      DCAE_FAIL("recipe base cycle: ", cycle, canonical, " (", origins["base"], ")");
    }
    chain.push_back(canonical);
    RecipeSource base_source;
    resolve_into(read_text(base_path.string()), base_path.string(), base_path.parent_path(), chain, base_source);
    chain.pop_back();
    values.erase("base");
    origins.erase("base");
    merge_into(base_source.values, base_source.origins, values, "");
    for (auto& [key, where] : origins) base_source.origins[key] = where;
    out.values = std::move(base_source.values);
    out.origins = std::move(base_source.origins);
    out.files.insert(out.files.end(), base_source.files.begin(), base_source.files.end());
  } else {
    out.values = std::move(values);
    out.origins = std::move(origins);
  }
}

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

void apply_override(RecipeSource& source, const std::string& text) {
  const size_t eq = text.find('=');
  DCAE_CHECK(eq != std::string::npos, "override '", text, "' must look like key.path=value");
  const std::string key = trim(text.substr(0, eq)), value_text = trim(text.substr(eq + 1));
  DCAE_CHECK(!key.empty() && key.find_first_of(" \t[]\"'") == std::string::npos && key.front() != '.' &&
                 key.back() != '.' && key.find("..") == std::string::npos,
             "override '", text, "': '", key, "' is not a dotted key path like optim.lr");
  DCAE_CHECK(key != "base", "override '", text, "': 'base' can only be set inside a recipe file");
  const std::string label = "--set " + text;
  Origins parsed_origins;
  json value;
  const bool bare_word = value_text.find_first_of("\"'[{") == std::string::npos;
  try {
    toml::table table = toml::parse("value = " + value_text, label);
    value = to_json(*table.get("value"), key, label, parsed_origins);
  } catch (const toml::parse_error& e) {
    // A bare word (model.name=tiny) is a string; anything else that does not parse is a mistake.
    DCAE_CHECK(bare_word && !value_text.empty(), "override '", text, "': value is not valid TOML: ", e.description());
    value = value_text;
  }
  json* node = &source.values;
  std::string walked;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    walked = join_key(walked, part);
    if (dot == std::string::npos) {
      erase_origins_under(source.origins, key);
      (*node)[part] = std::move(value);
      break;
    }
    json& next = (*node)[part];
    if (next.is_null()) next = json::object();
    DCAE_CHECK(next.is_object(), "override '", text, "': '", walked, "' is ", next.type_name(), " (",
               source.origins.count(walked) ? source.origins.at(walked) : "recipe", "), not a table");
    node = &next;
    start = dot + 1;
  }
  source.origins[key] = label;
  for (auto& [k, where] : parsed_origins) source.origins[k] = where;
}

// JSON back to TOML for to_toml(): objects are tables, arrays of objects arrays of tables.
void to_toml_node(const json& value, toml::table& parent, const std::string& key);
toml::array to_toml_array(const json& value) {
  toml::array out;
  for (const json& item : value) {
    if (item.is_object()) {
      toml::table table;
      for (const auto& [k, v] : item.items()) to_toml_node(v, table, k);
      out.push_back(std::move(table));
    } else if (item.is_array()) {
      out.push_back(to_toml_array(item));
    } else if (item.is_boolean()) {
      out.push_back(item.get<bool>());
    } else if (item.is_number_integer()) {
      out.push_back(item.get<int64_t>());
    } else if (item.is_number()) {
      out.push_back(item.get<double>());
    } else {
      out.push_back(item.is_string() ? item.get<std::string>() : item.dump());
    }
  }
  return out;
}
void to_toml_node(const json& value, toml::table& parent, const std::string& key) {
  if (value.is_null()) return;  // optional keys without a value
  if (value.is_object()) {
    toml::table table;
    for (const auto& [k, v] : value.items()) to_toml_node(v, table, k);
    parent.insert_or_assign(key, std::move(table));
  } else if (value.is_array()) {
    parent.insert_or_assign(key, to_toml_array(value));
  } else if (value.is_boolean()) {
    parent.insert_or_assign(key, value.get<bool>());
  } else if (value.is_number_integer()) {
    parent.insert_or_assign(key, value.get<int64_t>());
  } else if (value.is_number()) {
    parent.insert_or_assign(key, value.get<double>());
  } else {
    parent.insert_or_assign(key, value.is_string() ? value.get<std::string>() : value.dump());
  }
}

}  // namespace

RecipeSource resolve_recipe_text(const std::string& text, const std::string& name,
                                 const std::vector<std::string>& overrides, const std::string& base_dir) {
  RecipeSource source;
  std::vector<std::string> chain{name};
  resolve_into(text, name, fs::path(base_dir), chain, source);
  for (const std::string& override_text : overrides) apply_override(source, override_text);
  return source;
}

RecipeSource resolve_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  RecipeSource source;
  std::vector<std::string> chain{fs::weakly_canonical(path).string()};
  resolve_into(read_text(path), path, fs::path(path).parent_path(), chain, source);
  for (const std::string& override_text : overrides) apply_override(source, override_text);
  return source;
}

std::string Recipe::to_toml() const {
  toml::table root;
  for (const auto& [key, value] : values_.items()) to_toml_node(value, root, key);
  std::ostringstream out;
  out << toml::toml_formatter(root);
  return out.str() + "\n";
}

}  // namespace dcae::trainer
