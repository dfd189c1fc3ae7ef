// A plugin for the trainer tests: registers an optimizer ("sign_sgd"), an LR schedule ("step_halving") and the
// recipe key that schedule reads. Built as a shared library that links no dcae library: its dcae symbols resolve
// against the test executable.
#include <cstdlib>

#include "trainer/plugin.h"
#include "trainer/recipe.h"

namespace {

using namespace dcae;
using namespace dcae::trainer;

// p -= lr * sign(g): small enough to check by hand.
class SignSgd final : public Optimizer {
 public:
  using Optimizer::Optimizer;
  std::string type() const override { return "sign_sgd"; }

 protected:
  void update(const ParamGroup& group, const std::string&, const Tensor& master, const Tensor& grad,
              ParamState& state) override {
    DCAE_CHECK(master.dtype() == DType::f32, "sign_sgd handles f32 masters only");
    const Tensor g = grad.to(DType::f32).contiguous();
    float* p = master.data<float>();
    const float* gp = g.data<const float>();
    for (int64_t i = 0; i < master.numel(); ++i)
      p[i] -= static_cast<float>(group.lr) * static_cast<float>((gp[i] > 0) - (gp[i] < 0));
    ++state.step;
  }
};

// Halves the lr every `halve_every` steps (a key this plugin adds to the recipe schema).
class StepHalving final : public Schedule {
 public:
  StepHalving(const ScheduleConfig& config, int64_t every) : Schedule(config), every_(every) {}
  double factor(int64_t step) const override { return 1.0 / static_cast<double>(int64_t{1} << (step / every_)); }

 private:
  int64_t every_;
};

}  // namespace

extern "C" int dcae_plugin_register_v3(PluginApi* api) {
  if (!plugin_api_compatible(api)) return 1;
  if (std::getenv("DCAE_TEST_PLUGIN_REFUSE") != nullptr) return 7;
  if (std::getenv("DCAE_TEST_PLUGIN_THROW") != nullptr) DCAE_FAIL("the test plugin was asked to throw");
  api->registries->optimizers.add(
      "sign_sgd",
      [](std::vector<ParamGroup> groups, const OptimizerConfig&) -> std::unique_ptr<Optimizer> {
        return std::make_unique<SignSgd>(std::move(groups));
      },
      "sign SGD (test plugin)");
  api->registries->schedules.add(
      "step_halving",
      [](const ScheduleConfig& config) -> std::unique_ptr<Schedule> {
        const int64_t every =
            config.recipe ? config.recipe->get<int64_t>(config.section + ".halve_every") : int64_t{1};
        return std::make_unique<StepHalving>(config, every);
      },
      "halve the lr every halve_every steps (test plugin)");
  for (const char* section : {"schedule", "disc_schedule"}) {
    KeySpec spec;
    spec.path = std::string(section) + ".halve_every";
    spec.type = ValueType::integer;
    spec.default_value = 100;
    spec.doc = "step_halving: steps between halvings";
    spec.min = 1.0;
    api->schema->add(spec);
  }
  return 0;
}
