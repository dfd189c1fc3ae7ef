#include "trainer/recipe.h"

#include <gtest/gtest.h>

#include "tests/trainer/trainer_testing.h"

namespace dcae::trainer {
namespace {

using testing::ScratchDir;
using testing::write_file;

// The error message of `fn`, or a failure marker when it does not throw dcae::Error.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

constexpr const char* kMinimal = R"(
[model]
name = "tiny"
[data]
synthetic = true
[train]
steps = 10
)";

TEST(Recipe, BaseChainMergesKeyByKeyAndRecordsOrigins) {
  ScratchDir dir;
  write_file(dir.file("base.toml"), R"(# the root recipe
[model]
name = "tiny"
[model.config]
widths = [8, 16]
depth = 2
[data]
synthetic = true
batch_size = 4
[optim]
lr = 1e-3
betas = [0.5, 0.9]
no_decay = ["*.bias"]
[train]
steps = 100
)");
  write_file(dir.file("mid.toml"), R"(base = "base.toml"
[optim]
lr = 2e-4
[model.config]
depth = 3
)");
  // The derived file sits in a sub-folder: its base is relative to it.
  const std::string top = write_file(dir.file("phase/top.toml"), R"(base = "../mid.toml"
[train]
steps = 7
[optim]
no_decay = ["*norm*"]
)");
  const Recipe r = load_recipe(top);
  EXPECT_EQ(r.get<int64_t>("train.steps"), 7);
  EXPECT_EQ(r.get<double>("optim.lr"), 2e-4);
  EXPECT_EQ(r.get<std::vector<double>>("optim.betas"), (std::vector<double>{0.5, 0.9}));
  EXPECT_EQ(r.get<std::vector<std::string>>("optim.no_decay"), (std::vector<std::string>{"*norm*"}));  // replaced
  EXPECT_EQ(r.at("model.config"), (nlohmann::json{{"widths", {8, 16}}, {"depth", 3}}));  // tables merge
  EXPECT_EQ(r.get<int64_t>("data.batch_size"), 4);
  EXPECT_EQ(r.get<int64_t>("data.workers"), 2);  // schema default
  EXPECT_EQ(r.origin("data.workers"), "default");
  EXPECT_NE(r.origin("optim.lr").find("mid.toml:3"), std::string::npos) << r.origin("optim.lr");
  EXPECT_NE(r.origin("optim.betas").find("base.toml:12"), std::string::npos) << r.origin("optim.betas");
  EXPECT_NE(r.origin("train.steps").find("top.toml:3"), std::string::npos) << r.origin("train.steps");
  ASSERT_EQ(r.files().size(), 3u);
  EXPECT_EQ(r.files()[0], top);
  EXPECT_NE(r.files()[2].find("base.toml"), std::string::npos);
  EXPECT_FALSE(r.values().contains("base"));
}

TEST(Recipe, CommandLineOverridesParseAsToml) {
  ScratchDir dir;
  const std::string path = write_file(dir.file("r.toml"), kMinimal);
  const Recipe r = load_recipe(path, {"optim.lr=1e-4", "train.precision=bf16", "optim.betas=[0.8, 0.95]",
                                      "train.trainable=[\"decoder.*\"]", "data.synthetic=false",
                                      "data.shards=\"/data/*.h5\"", "model.config.latent_channels=4", "train.steps = 3",
                                      "model.name=dc-ae-f32c32-in-1.0"});
  EXPECT_EQ(r.get<double>("optim.lr"), 1e-4);
  EXPECT_EQ(r.origin("optim.lr"), "--set optim.lr=1e-4");
  EXPECT_EQ(r.get<std::string>("train.precision"), "bf16");  // a bare word is a string
  EXPECT_EQ(r.get<std::vector<double>>("optim.betas"), (std::vector<double>{0.8, 0.95}));
  EXPECT_EQ(r.get<std::vector<std::string>>("train.trainable"), (std::vector<std::string>{"decoder.*"}));
  EXPECT_FALSE(r.get<bool>("data.synthetic"));
  EXPECT_EQ(r.get<std::string>("data.shards"), "/data/*.h5");
  EXPECT_EQ(r.at("model.config")["latent_channels"], 4);
  EXPECT_EQ(r.get<int64_t>("train.steps"), 3);
  EXPECT_EQ(r.get<std::string>("model.name"), "dc-ae-f32c32-in-1.0");

  EXPECT_NE(error_of([&] { load_recipe(path, {"optim.lr"}); }).find("key.path=value"), std::string::npos);
  EXPECT_NE(error_of([&] { load_recipe(path, {"optim.lr=[1,"}); }).find("not valid TOML"), std::string::npos);
  EXPECT_NE(error_of([&] { load_recipe(path, {"base=x.toml"}); }).find("base"), std::string::npos);
  const std::string through_value = error_of([&] { load_recipe(path, {"train.steps.x=1"}); });
  EXPECT_NE(through_value.find("'train.steps' is number"), std::string::npos) << through_value;
  // Overrides are validated like file keys, naming the override.
  const std::string bad = error_of([&] { load_recipe(path, {"optim.lr=fast"}); });
  EXPECT_NE(bad.find("'optim.lr' at --set optim.lr=fast must be a number"), std::string::npos) << bad;
}

TEST(Recipe, UnknownKeyNamesKeyFileLineAndSuggestion) {
  ScratchDir dir;
  const std::string path = write_file(dir.file("typo.toml"), std::string(kMinimal) + "[optim]\nlrr = 1e-3\n");
  const std::string message = error_of([&] { load_recipe(path); });
  EXPECT_NE(message.find("unknown key 'optim.lrr'"), std::string::npos) << message;
  EXPECT_NE(message.find("typo.toml:9"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'lr'"), std::string::npos) << message;
  EXPECT_NE(message.find("[optim] accepts:"), std::string::npos) << message;

  const std::string section = write_file(dir.file("section.toml"), std::string(kMinimal) + "[optimm]\nlr = 1\n");
  const std::string section_message = error_of([&] { load_recipe(section); });
  EXPECT_NE(section_message.find("unknown key 'optimm'"), std::string::npos) << section_message;
  EXPECT_NE(section_message.find("did you mean 'optim'"), std::string::npos) << section_message;
}

TEST(Recipe, WrongTypesChoicesBoundsAndLengthsAreErrors) {
  ScratchDir dir;
  auto message_for = [&](const std::string& extra) {
    const std::string path = write_file(dir.file("bad.toml"), std::string(kMinimal) + extra);
    return error_of([&] { load_recipe(path); });
  };
  std::string m = message_for("[optim]\nlr = \"fast\"\n");
  EXPECT_NE(m.find("'optim.lr' at "), std::string::npos) << m;
  EXPECT_NE(m.find("bad.toml:9 must be a number, got string \"fast\""), std::string::npos) << m;
  m = message_for("[eval]\nevery = 1.5\n");
  EXPECT_NE(m.find("'eval.every'"), std::string::npos) << m;
  EXPECT_NE(m.find("must be an integer"), std::string::npos) << m;
  m = message_for("[log]\nall_ranks = 1\n");
  EXPECT_NE(m.find("must be a boolean"), std::string::npos) << m;
  m = message_for("[train.precision]\nx = 1\n");  // a table where a string belongs
  EXPECT_NE(m.find("'train.precision'"), std::string::npos) << m;
  m = message_for("[dist]\nstrategy = \"zero\"\n");
  EXPECT_NE(m.find("is not one of: ddp, fsdp"), std::string::npos) << m;
  m = message_for("[optim]\nbetas = [0.9, 0.99, 0.999]\n");
  EXPECT_NE(m.find("'optim.betas'"), std::string::npos) << m;
  EXPECT_NE(m.find("has 3 elements, expected 2"), std::string::npos) << m;
  m = message_for("[optim]\nbetas = [0.9, \"x\"]\n");
  EXPECT_NE(m.find("must be an array of numbers"), std::string::npos) << m;
  m = message_for("[checkpoint]\nkeep_last = -1\n");
  EXPECT_NE(m.find("'checkpoint.keep_last'"), std::string::npos) << m;
  EXPECT_NE(m.find("out of range"), std::string::npos) << m;
  const std::string plugins = write_file(dir.file("plugins.toml"), "plugins = \"libx.so\"\n" + std::string(kMinimal));
  m = error_of([&] { load_recipe(plugins); });
  EXPECT_NE(m.find("'plugins' at " + plugins + ":1 must be an array of strings"), std::string::npos) << m;

  // An integer literal where a number is expected is fine and reads as a float.
  const std::string ok = write_file(dir.file("ok.toml"), std::string(kMinimal) + "[optim]\nlr = 1\n");
  const Recipe r = load_recipe(ok);
  EXPECT_EQ(r.get<double>("optim.lr"), 1.0);
  EXPECT_TRUE(r.at("optim.lr").is_number_float());
  EXPECT_THROW(r.get<int64_t>("optim.lr"), Error);  // typed access checks the type
  EXPECT_THROW(r.get<double>("optim.nope"), Error);
  EXPECT_EQ(r.get_or<double>("optim.nope", 2.5), 2.5);
}

TEST(Recipe, MissingRequiredAndCrossKeyRules) {
  ScratchDir dir;
  const std::string no_name = write_file(dir.file("noname.toml"), "[data]\nsynthetic = true\n[train]\nsteps = 1\n");
  std::string m = error_of([&] { load_recipe(no_name); });
  EXPECT_NE(m.find("missing required key 'model.name'"), std::string::npos) << m;
  EXPECT_NE(m.find("noname.toml"), std::string::npos) << m;
  // A missing section altogether still reports the key.
  const std::string no_train = write_file(dir.file("notrain.toml"), "[model]\nname = \"tiny\"\n[data]\nsynthetic = true\n");
  m = error_of([&] { load_recipe(no_train); });
  EXPECT_NE(m.find("missing required key 'train.steps'"), std::string::npos) << m;
  // data.shards is needed unless the data is synthetic.
  const std::string no_data = write_file(dir.file("nodata.toml"), "[model]\nname = \"tiny\"\n[train]\nsteps = 1\n");
  m = error_of([&] { load_recipe(no_data); });
  EXPECT_NE(m.find("data.shards is required"), std::string::npos) << m;
  const std::string lpips = write_file(dir.file("lpips.toml"), std::string(kMinimal) + "[loss]\nlpips = 0.25\n");
  m = error_of([&] { load_recipe(lpips); });
  EXPECT_NE(m.find("needs loss.lpips_weights"), std::string::npos) << m;
}

TEST(Recipe, ParamGroupsAreValidatedFieldByField) {
  ScratchDir dir;
  const std::string good = write_file(dir.file("groups.toml"), std::string(kMinimal) + R"(
[[optim.groups]]
params = ["decoder.*"]
lr = 1e-5
[[optim.groups]]
params = ["encoder.*"]
weight_decay = 0
)");
  const Recipe r = load_recipe(good);
  ASSERT_EQ(r.at("optim.groups").size(), 2u);
  EXPECT_EQ(r.at("optim.groups")[0]["lr"], 1e-5);
  EXPECT_FALSE(r.at("optim.groups")[0].contains("weight_decay"));  // optional, no default
  EXPECT_TRUE(r.at("optim.groups")[1]["weight_decay"].is_number_float());

  const std::string missing = write_file(dir.file("g1.toml"), std::string(kMinimal) + "[[optim.groups]]\nlr = 1e-5\n");
  std::string m = error_of([&] { load_recipe(missing); });
  EXPECT_NE(m.find("missing required key 'optim.groups[0].params'"), std::string::npos) << m;
  EXPECT_NE(m.find("g1.toml:8"), std::string::npos) << m;  // the [[optim.groups]] header
  const std::string unknown =
      write_file(dir.file("g2.toml"), std::string(kMinimal) + "[[optim.groups]]\nparams = [\"a\"]\nbeta = 1\n");
  m = error_of([&] { load_recipe(unknown); });
  EXPECT_NE(m.find("unknown key 'optim.groups[0].beta'"), std::string::npos) << m;
  EXPECT_NE(m.find("g2.toml:10"), std::string::npos) << m;
}

TEST(Recipe, BaseCyclesAndMissingBasesAreErrors) {
  ScratchDir dir;
  write_file(dir.file("a.toml"), "base = \"b.toml\"\n[train]\nsteps = 1\n");
  write_file(dir.file("b.toml"), "base = \"a.toml\"\n");
  std::string m = error_of([&] { resolve_recipe(dir.file("a.toml")); });
  EXPECT_NE(m.find("recipe base cycle"), std::string::npos) << m;
  EXPECT_NE(m.find("a.toml -> "), std::string::npos) << m;
  EXPECT_NE(m.find("b.toml"), std::string::npos) << m;
  write_file(dir.file("self.toml"), "base = \"./self.toml\"\n");
  EXPECT_NE(error_of([&] { resolve_recipe(dir.file("self.toml")); }).find("cycle"), std::string::npos);
  write_file(dir.file("orphan.toml"), "base = \"missing.toml\"\n");
  m = error_of([&] { resolve_recipe(dir.file("orphan.toml")); });
  EXPECT_NE(m.find("base 'missing.toml' not found"), std::string::npos) << m;
  EXPECT_NE(m.find("orphan.toml:1"), std::string::npos) << m;
  write_file(dir.file("badbase.toml"), "base = 3\n");
  EXPECT_NE(error_of([&] { resolve_recipe(dir.file("badbase.toml")); }).find("'base' must be a string"),
            std::string::npos);
  EXPECT_NE(error_of([&] { resolve_recipe(dir.file("nope.toml")); }).find("'" + dir.file("nope.toml") + "' not found"),
            std::string::npos);
}

TEST(Recipe, SyntaxErrorNamesFileAndLine) {
  ScratchDir dir;
  const std::string path = write_file(dir.file("broken.toml"), "[model]\nname = \"tiny\"\nlr = = 1\n");
  const std::string m = error_of([&] { load_recipe(path); });
  EXPECT_NE(m.find("recipe syntax error in " + path + ":3:"), std::string::npos) << m;
  // A syntax error in a base names the base.
  write_file(dir.file("child.toml"), "base = \"broken.toml\"\n");
  const std::string child = error_of([&] { load_recipe(dir.file("child.toml")); });
  EXPECT_NE(child.find("broken.toml:3:"), std::string::npos) << child;
}

TEST(Recipe, ResolvedRecipeRoundTripsThroughToml) {
  ScratchDir dir;
  const std::string path = write_file(dir.file("r.toml"), "plugins = []\n" + std::string(kMinimal) + R"(
[optim]
lr = 3e-4
[[optim.groups]]
params = ["fc2.*"]
lr = 1e-2
[model.config]
widths = [8, 16]
)");
  const Recipe r = load_recipe(path, {"schedule.name=cosine"});
  const std::string again = write_file(dir.file("again.toml"), r.to_toml());
  const Recipe reloaded = load_recipe(again);
  EXPECT_EQ(reloaded.values(), r.values());
  EXPECT_EQ(plugin_paths(resolve_recipe(path, {"plugins=[\"a.so\", \"b.so\"]"})),
            (std::vector<std::string>{"a.so", "b.so"}));
}

TEST(Recipe, TextRecipesAndSchemaDescription) {
  const Recipe r = validate_recipe(resolve_recipe_text(kMinimal, "inline"), dcae_recipe_schema());
  EXPECT_EQ(r.get<std::string>("model.name"), "tiny");
  EXPECT_EQ(r.describe_origin(), "inline");
  const std::string doc = dcae_recipe_schema().describe();
  for (const char* key : {"model.name (a string, required)", "optim.lr (a number, default 6.4e-05)",
                          "schedule.name", "train.precision", "checkpoint.resume", "dist.strategy", "plugins"})
    EXPECT_NE(doc.find(key), std::string::npos) << key;
  RecipeSchema schema;
  KeySpec spec;
  spec.path = "a.b";
  spec.type = ValueType::integer;
  spec.default_value = 1;
  schema.add(spec);
  EXPECT_THROW(schema.add(spec), Error);  // declared twice
  spec.path = "a.c";
  spec.required = true;
  EXPECT_THROW(schema.add(spec), Error);  // required and defaulted
}

}  // namespace
}  // namespace dcae::trainer
