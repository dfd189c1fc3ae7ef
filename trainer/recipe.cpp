// Recipe access and validation against a RecipeSchema (the TOML side is in recipe_toml.cpp).
#include "trainer/recipe.h"

#include <algorithm>

namespace dcae::trainer {

using nlohmann::json;

namespace {

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::vector<std::string> split_dots(const std::string& path) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string short_dump(const json& value) {
  std::string text = value.dump();
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

class Validator {
 public:
  Validator(const RecipeSchema& schema, const RecipeSource& source, std::string recipe_name)
      : schema_(schema), source_(source), recipe_name_(std::move(recipe_name)) {}

  // Checks the keys of `in` (a table at schema section `section`, concrete path `concrete`) into `out`.
  void validate_table(const json& in, json& out, const std::string& section, const std::string& concrete) {
    for (const auto& [key, value] : in.items()) {
      const std::string schema_path = join_key(section, key), path = join_key(concrete, key);
      if (const KeySpec* spec = schema_.find(schema_path)) {
        out[key] = check_value(value, *spec, path);
      } else if (schema_.is_section(schema_path)) {
        DCAE_CHECK(value.is_object(), "recipe error: '", path, "' (", where(path), ") must be a table [", path,
                   "], got ", value.type_name(), " ", short_dump(value));
        validate_table(value, out[key], schema_path, path);
      } else {
        unknown_key(section, key, path);
      }
    }
    fill_defaults(out, section, concrete);
  }

 private:
  std::string where(const std::string& path) const {
    auto it = source_.origins.find(path);
    return it != source_.origins.end() ? it->second : recipe_name_;
  }

  [[noreturn]] void unknown_key(const std::string& section, const std::string& key, const std::string& path) const {
    const std::vector<std::string> known = schema_.children(section);
    std::string list, suggestion;
    size_t best = 3;
    for (const std::string& name : known) {
      list += (list.empty() ? "" : ", ") + name;
      const size_t d = edit_distance(name, key);
      if (d < best) {
        best = d;
        suggestion = name;
      }
    }
    const std::string scope = section.empty() ? "the top level" : "[" + section + "]";
    DCAE_FAIL("recipe error: unknown key '", path, "' at ", where(path),
              suggestion.empty() ? std::string() : " (did you mean '" + suggestion + "'?)", "; ", scope,
              " accepts: ", list);
  }

  [[noreturn]] void type_error(const KeySpec& spec, const std::string& path, const json& value) const {
    DCAE_FAIL("recipe error: '", path, "' at ", where(path), " must be ", value_type_name(spec.type), ", got ",
              value.type_name(), " ", short_dump(value), " (", spec.doc, ")");
  }

  void check_bounds(const KeySpec& spec, const std::string& path, double x) const {
    DCAE_CHECK((!spec.min || x >= *spec.min) && (!spec.max || x <= *spec.max), "recipe error: '", path, "' at ",
               where(path), " = ", x, " is out of range [", spec.min ? std::to_string(*spec.min) : "-inf", ", ",
               spec.max ? std::to_string(*spec.max) : "inf", "] (", spec.doc, ")");
  }

  json check_list(const json& value, const KeySpec& spec, const std::string& path) const {
    if (!value.is_array()) type_error(spec, path, value);
    DCAE_CHECK(!spec.length || value.size() == *spec.length, "recipe error: '", path, "' at ", where(path), " has ",
               value.size(), " elements, expected ", spec.length.value_or(0), " (", spec.doc, ")");
    json out = json::array();
    for (const json& item : value) {
      if (spec.type == ValueType::string_list && !item.is_string()) type_error(spec, path, value);
      if (spec.type == ValueType::integer_list && !item.is_number_integer()) type_error(spec, path, value);
      if (spec.type == ValueType::number_list && !item.is_number()) type_error(spec, path, value);
      if (item.is_number()) check_bounds(spec, path, item.get<double>());
      out.push_back(spec.type == ValueType::number_list ? json(item.get<double>()) : item);
    }
    return out;
  }

  json check_value(const json& value, const KeySpec& spec, const std::string& path) {
    switch (spec.type) {
      case ValueType::boolean:
        if (!value.is_boolean()) type_error(spec, path, value);
        return value;
      case ValueType::integer:
        if (!value.is_number_integer()) type_error(spec, path, value);
        check_bounds(spec, path, value.get<double>());
        return value;
      case ValueType::number:
        if (!value.is_number()) type_error(spec, path, value);
        check_bounds(spec, path, value.get<double>());
        return value.get<double>();  // integer literals become floats
      case ValueType::string:
        if (!value.is_string()) type_error(spec, path, value);
        if (!spec.choices.empty() &&
            std::find(spec.choices.begin(), spec.choices.end(), value.get<std::string>()) == spec.choices.end()) {
          std::string list;
          for (const std::string& c : spec.choices) list += (list.empty() ? "" : ", ") + c;
          DCAE_FAIL("recipe error: '", path, "' at ", where(path), " = ", short_dump(value), " is not one of: ", list);
        }
        return value;
      case ValueType::string_list:
      case ValueType::number_list:
      case ValueType::integer_list:
        return check_list(value, spec, path);
      case ValueType::table:
        if (!value.is_object()) type_error(spec, path, value);
        return value;
      case ValueType::table_list: {
        if (!value.is_array()) type_error(spec, path, value);
        json out = json::array();
        for (size_t i = 0; i < value.size(); ++i) {
          const std::string element = path + "[" + std::to_string(i) + "]";
          if (!value[i].is_object()) type_error(spec, element, value[i]);
          json checked = json::object();
          validate_table(value[i], checked, spec.path + "[]", element);
          out.push_back(std::move(checked));
        }
        return out;
      }
    }
    return value;
  }

  // Defaults for absent keys below `section` (not inside list elements unless `section` is one); missing required
  // keys are errors.
  void fill_defaults(json& out, const std::string& section, const std::string& concrete) const {
    const std::string prefix = section.empty() ? "" : section + ".";
    for (const KeySpec& spec : schema_.keys()) {
      if (spec.path.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string rest = spec.path.substr(prefix.size());
      if (rest.find("[]") != std::string::npos) continue;
      const std::vector<std::string> parts = split_dots(rest);
      json* node = &out;
      bool present = true;
      for (size_t i = 0; i + 1 < parts.size() && present; ++i) {
        present = node->contains(parts[i]);
        if (present) node = &(*node)[parts[i]];
      }
      if (present && node->contains(parts.back())) continue;
      const std::string path = join_key(concrete, rest);
      DCAE_CHECK(!spec.required, "recipe error: missing required key '", path, "' (", spec.doc, ") in ",
                 concrete.find('[') != std::string::npos ? where(concrete) : recipe_name_);
      if (spec.default_value.is_null()) continue;
      node = &out;
      for (size_t i = 0; i + 1 < parts.size(); ++i) node = &(*node)[parts[i]];
      (*node)[parts.back()] = spec.default_value;
    }
  }

  const RecipeSchema& schema_;
  const RecipeSource& source_;
  std::string recipe_name_;
};

std::string describe_files(const std::vector<std::string>& files) {
  if (files.empty()) return "(recipe)";
  std::string out = files.front();
  for (size_t i = 1; i < files.size(); ++i) out += (i == 1 ? " (bases: " : ", ") + files[i];
  return files.size() > 1 ? out + ")" : out;
}

}  // namespace

std::vector<std::string> plugin_paths(const RecipeSource& source) {
  if (!source.values.contains("plugins")) return {};
  const json& plugins = source.values["plugins"];
  const std::string where = source.origins.count("plugins") ? source.origins.at("plugins") : "recipe";
  DCAE_CHECK(plugins.is_array(), "recipe error: 'plugins' at ", where, " must be an array of strings");
  std::vector<std::string> out;
  for (const json& p : plugins) {
    DCAE_CHECK(p.is_string(), "recipe error: 'plugins' at ", where, " must be an array of strings, got ", p.dump());
    out.push_back(p.get<std::string>());
  }
  return out;
}

Recipe::Recipe(json values, std::map<std::string, std::string> origins, std::vector<std::string> files)
    : values_(std::move(values)), origins_(std::move(origins)), files_(std::move(files)) {}

const json& Recipe::at(const std::string& key) const {
  const json* node = &values_;
  for (const std::string& part : split_dots(key)) {
    DCAE_CHECK(node->is_object() && node->contains(part), "recipe ", describe_origin(), " has no key '", key, "'");
    node = &(*node)[part];
  }
  return *node;
}

bool Recipe::has(const std::string& key) const {
  const json* node = &values_;
  for (const std::string& part : split_dots(key)) {
    if (!node->is_object() || !node->contains(part)) return false;
    node = &(*node)[part];
  }
  return !node->is_null();
}

std::string Recipe::origin(const std::string& key) const {
  auto it = origins_.find(key);
  return it != origins_.end() ? it->second : "default";
}

std::string Recipe::describe_origin() const { return describe_files(files_); }

Recipe validate_recipe(const RecipeSource& source, const RecipeSchema& schema) {
  DCAE_CHECK(source.values.is_object(), "recipe ", describe_files(source.files), " is not a table");
  Validator validator(schema, source, describe_files(source.files));
  json values = json::object();
  validator.validate_table(source.values, values, "", "");
  Recipe recipe(std::move(values), source.origins, source.files);
  for (const auto& rule : schema.rules()) rule(recipe);
  return recipe;
}

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides, const RecipeSchema& schema) {
  return validate_recipe(resolve_recipe(path, overrides), schema);
}

}  // namespace dcae::trainer
