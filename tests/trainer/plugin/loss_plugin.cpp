// A plugin for the training-job tests: registers two loss terms and the recipe keys they read.
//   test_scaled_l1  loss.test_scale * mean |recon - target|   (a new loss a recipe trains with)
//   test_nan        mean |recon - target|, or NaN from optimizer step loss.test_nan_from on (non-finite handling)
// Like test_plugin.cpp it links no dcae library: its dcae symbols resolve against the host executable.
#include <limits>

#include "ops/elementwise.h"
#include "ops/loss.h"
#include "trainer/plugin.h"
#include "trainer/recipe.h"

namespace {

using namespace dcae;
using namespace dcae::trainer;

class ScaledL1 final : public LossTerm {
 public:
  explicit ScaledL1(double scale) : scale_(scale) {}
  Tensor compute(const Tensor& recon, const Tensor& target, int64_t) override {
    return ops::mul(ops::l1_loss(recon, target), scale_);
  }

 private:
  double scale_;
};

class NanFrom final : public LossTerm {
 public:
  explicit NanFrom(int64_t from) : from_(from) {}
  Tensor compute(const Tensor& recon, const Tensor& target, int64_t step) override {
    const Tensor l1 = ops::l1_loss(recon, target);
    return step < from_ ? l1 : ops::mul(l1, std::numeric_limits<double>::quiet_NaN());
  }

 private:
  int64_t from_;
};

void add_key(RecipeSchema& schema, const char* path, ValueType type, nlohmann::json value, const char* doc) {
  KeySpec spec;
  spec.path = path;
  spec.type = type;
  spec.default_value = std::move(value);
  spec.doc = doc;
  schema.add(spec);
}

}  // namespace

extern "C" int dcae_plugin_register_v3(PluginApi* api) {
  if (!plugin_api_compatible(api)) return 1;
  api->registries->losses.add(
      "test_scaled_l1",
      [](const LossSpec& spec) -> std::unique_ptr<LossTerm> {
        return std::make_unique<ScaledL1>(spec.recipe ? spec.recipe->get<double>("loss.test_scale") : 1.0);
      },
      "loss.test_scale * L1 (test plugin)");
  api->registries->losses.add(
      "test_nan",
      [](const LossSpec& spec) -> std::unique_ptr<LossTerm> {
        return std::make_unique<NanFrom>(spec.recipe ? spec.recipe->get<int64_t>("loss.test_nan_from") : 0);
      },
      "L1, NaN from step loss.test_nan_from on (test plugin)");
  add_key(*api->schema, "loss.test_scale", ValueType::number, 1.0, "test_scaled_l1: the factor");
  add_key(*api->schema, "loss.test_nan_from", ValueType::integer, 0, "test_nan: first step that returns NaN");
  return 0;
}
