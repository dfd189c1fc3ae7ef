// The declared shape of a recipe: every known key with its type, default (or required), bounds and a one-line doc.
// Validation (trainer/recipe.h) rejects anything the schema does not declare, so a typo stops the run up front.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dcae::trainer {

enum class ValueType {
  boolean,
  integer,
  number,        // float; an integer literal is accepted and stored as a float
  string,
  string_list,
  number_list,
  integer_list,
  table,         // free-form table, checked by whoever reads it (e.g. model.config overrides)
  table_list,    // array of tables whose fields are declared as "<path>[].<field>"
};
const char* value_type_name(ValueType type);

struct KeySpec {
  std::string path;             // "optim.lr"; fields of a table_list element: "optim.groups[].lr"
  ValueType type = ValueType::string;
  nlohmann::json default_value;  // null: no default (required, or optional without a value)
  bool required = false;
  std::string doc;
  std::vector<std::string> choices;  // allowed strings (empty: any)
  std::optional<double> min;         // bounds for numbers, integers and number lists
  std::optional<double> max;
  std::optional<size_t> length;      // exact length for lists
};

class Recipe;

class RecipeSchema {
 public:
  // Declares a key; declaring one twice is an error. Plugins add their own keys through PluginApi.
  void add(KeySpec spec);
  // A check across keys that runs after validation (e.g. "data.shards unless data.synthetic"); throws dcae::Error.
  void add_rule(std::function<void(const Recipe&)> rule);

  const KeySpec* find(const std::string& path) const;
  // True when `path` is a section: some declared key lies below it ("optim", "optim.groups[]").
  bool is_section(const std::string& path) const;
  // Direct children of a section (or of the top level for ""), for "known keys" hints.
  std::vector<std::string> children(const std::string& section) const;
  const std::vector<KeySpec>& keys() const { return keys_; }
  const std::vector<std::function<void(const Recipe&)>>& rules() const { return rules_; }

  // Human-readable table of every key: path, type, default, doc.
  std::string describe() const;

 private:
  std::vector<KeySpec> keys_;
  std::vector<std::function<void(const Recipe&)>> rules_;
};

// The schema of a DC-AE training recipe (sections model, data, loss, optim, disc_optim, schedule, disc_schedule,
// train, eval, checkpoint, log, dist, and the top-level plugins list and job kind).
RecipeSchema dcae_recipe_schema();
// The train.cuda_graph rule of that schema: refuses, naming the reason, what a captured step cannot take (a CPU
// device, the GAN, fp16 loss scaling, fsdp, an optimizer other than adamw). Several ranks are refused by the job.
void check_cuda_graph_recipe(const Recipe& recipe);

// The schema of a diffusion training recipe (job = "diffusion"; trainer/diffusion/diffusion_schema.cpp).
RecipeSchema diffusion_recipe_schema();

// The job a recipe asks for: its top-level `job` ("dcae" when absent), read before validation picks the schema.
std::string recipe_job_kind(const nlohmann::json& values);

// Sections both job kinds share: an optimizer (name, lr, betas, eps, weight_decay, ..., groups) and an LR schedule.
void add_optimizer_section(RecipeSchema& s, const std::string& section, const std::string& what);
void add_schedule_section(RecipeSchema& s, const std::string& section, const std::string& what);

}  // namespace dcae::trainer
