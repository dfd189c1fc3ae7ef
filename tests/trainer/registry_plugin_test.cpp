#include <gtest/gtest.h>

#include <cstdlib>

#include "trainer/plugin.h"
#include "trainer/recipe.h"
#include "trainer/registry.h"
#include "core/autograd/engine.h"
#include "tests/testing/check.h"
#include "tests/trainer/trainer_testing.h"

namespace dcae::trainer {
namespace {

using testing::ScratchDir;
using testing::write_file;

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

TEST(Registry, CreatesByNameAndListsKnownNamesOnErrors) {
  Registry<std::function<int(int)>> registry("widget");
  registry.add("double", [](int x) { return 2 * x; }, "doubles");
  registry.add("negate", [](int x) { return -x; });
  EXPECT_EQ(registry.create("double", 21), 42);
  EXPECT_EQ(registry.create("negate", 3), -3);
  EXPECT_TRUE(registry.contains("negate"));
  EXPECT_EQ(registry.names(), (std::vector<std::string>{"double", "negate"}));
  EXPECT_EQ(registry.doc("double"), "doubles");
  const std::string m = error_of([&] { registry.create("tripple", 1); });
  EXPECT_NE(m.find("unknown widget 'tripple'; known: double, negate"), std::string::npos) << m;
  EXPECT_NE(error_of([&] { registry.add("double", [](int x) { return x; }); }).find("widget 'double' is already registered"),
            std::string::npos);
  EXPECT_THROW(registry.add("", [](int x) { return x; }), Error);
  Registry<std::function<int()>> empty_registry("gadget");
  EXPECT_NE(error_of([&] { empty_registry.get("x"); }).find("(none registered)"), std::string::npos);
}

TEST(Registry, BuiltinsAreRegistered) {
  EXPECT_EQ(registries().optimizers.names(), (std::vector<std::string>{"adamw", "sgd"}));
  EXPECT_EQ(registries().schedules.names(), (std::vector<std::string>{"constant", "cosine"}));
  OptimizerConfig config;
  config.name = "adam";
  testing::TinyNet net(1);
  const std::string m = error_of([&] { make_optimizer(net.named_parameters(), config); });
  EXPECT_NE(m.find("unknown optimizer 'adam'; known: adamw, sgd"), std::string::npos) << m;
}

TEST(Plugin, RegistersAnOptimizerAScheduleAndARecipeKeyUsedFromARecipe) {
  ScratchDir dir;
  const std::string recipe_path = write_file(dir.file("plugin.toml"), std::string(R"(
plugins = [")") + DCAE_TEST_PLUGIN + R"("]
[model]
name = "tiny"
[data]
synthetic = true
[train]
steps = 8
[optim]
name = "sign_sgd"
lr = 0.5
no_decay = []
[schedule]
name = "step_halving"
halve_every = 2
)");
  Registries local;  // fresh registries: no built-ins, only what the plugin adds
  RecipeSchema schema = dcae_recipe_schema();
  const RecipeSource source = resolve_recipe(recipe_path);
  // Before the plugin is loaded, its key is unknown to the schema.
  EXPECT_NE(error_of([&] { validate_recipe(source, schema); }).find("unknown key 'schedule.halve_every'"),
            std::string::npos);
  const std::vector<std::string> plugins = plugin_paths(source);
  ASSERT_EQ(plugins.size(), 1u);
  EXPECT_TRUE(load_plugin(plugins[0], local, schema));
  EXPECT_FALSE(load_plugin(plugins[0], local, schema));  // same registries: loaded once
  const Recipe recipe = validate_recipe(source, schema);
  EXPECT_EQ(local.optimizers.names(), (std::vector<std::string>{"sign_sgd"}));

  auto schedule = make_schedule(schedule_config(recipe, "schedule", recipe.get<int64_t>("train.steps")), local);
  EXPECT_EQ(schedule->factor(0), 1.0);
  EXPECT_EQ(schedule->factor(1), 1.0);
  EXPECT_EQ(schedule->factor(2), 0.5);
  EXPECT_EQ(schedule->factor(5), 0.25);

  // Train two steps of the tiny model with the plugin's optimizer and schedule.
  testing::TinyNet net(3);
  auto optim = make_optimizer(net.named_parameters(), optimizer_config(recipe, "optim"), local);
  EXPECT_EQ(optim->type(), "sign_sgd");
  const Tensor before = net.fc1->weight.clone();
  std::vector<float> expected = before.to_vector<float>();
  const Tensor x = dcae::testing::random_tensor({5, 4}, 11, DType::f32);
  for (int64_t step = 0; step < 3; ++step) {
    optim->zero_grad();
    autograd::backward(ops::mean(ops::square(net.forward(x))));
    const std::vector<float> g = net.fc1->weight.grad().to_vector<float>();
    const float lr = static_cast<float>(0.5 * schedule->factor(step));
    for (size_t i = 0; i < expected.size(); ++i) expected[i] -= lr * static_cast<float>((g[i] > 0) - (g[i] < 0));
    optim->set_lr_factor(schedule->factor(step));
    optim->step();
  }
  EXPECT_EQ(net.fc1->weight.to_vector<float>(), expected);
  EXPECT_NE(net.fc1->weight.to_vector<float>(), before.to_vector<float>());

  // The same plugin into other registries registers again; the process-wide ones stay untouched.
  Registries other;
  RecipeSchema other_schema = dcae_recipe_schema();
  load_plugins(plugins, other, other_schema);
  EXPECT_TRUE(other.schedules.contains("step_halving"));
  EXPECT_FALSE(registries().schedules.contains("step_halving"));
}

TEST(Plugin, LoadErrorsNameTheFileAndTheReason) {
  ScratchDir dir;
  Registries local;
  RecipeSchema schema;
  std::string m = error_of([&] { load_plugin(dir.file("libmissing.so"), local, schema); });
  EXPECT_NE(m.find("plugin '" + dir.file("libmissing.so") + "' not found"), std::string::npos) << m;

  const std::string not_elf = write_file(dir.file("libtext.so"), "not a shared library\n");
  m = error_of([&] { load_plugin(not_elf, local, schema); });
  EXPECT_NE(m.find("cannot load plugin '" + not_elf + "'"), std::string::npos) << m;
  EXPECT_NE(m.find("libtext.so"), std::string::npos) << m;  // dlerror() names it too

  // A real shared library without the entry point (the C math library is always there).
  for (const char* libm : {"/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"}) {
    if (!std::filesystem::exists(libm)) continue;
    m = error_of([&] { load_plugin(libm, local, schema); });
    EXPECT_NE(m.find("exports no dcae_plugin_register_v3"), std::string::npos) << m;
    break;
  }

  ::setenv("DCAE_TEST_PLUGIN_REFUSE", "1", 1);
  m = error_of([&] { load_plugin(DCAE_TEST_PLUGIN, local, schema); });
  ::unsetenv("DCAE_TEST_PLUGIN_REFUSE");
  EXPECT_NE(m.find("refused to register"), std::string::npos) << m;
  EXPECT_NE(m.find("returned 7"), std::string::npos) << m;

  ::setenv("DCAE_TEST_PLUGIN_THROW", "1", 1);
  m = error_of([&] { load_plugin(DCAE_TEST_PLUGIN, local, schema); });
  ::unsetenv("DCAE_TEST_PLUGIN_THROW");
  EXPECT_NE(m.find("failed while registering: the test plugin was asked to throw"), std::string::npos) << m;
  EXPECT_TRUE(local.optimizers.names().empty());
}

}  // namespace
}  // namespace dcae::trainer
