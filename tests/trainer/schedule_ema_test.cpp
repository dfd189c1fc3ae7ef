#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "tests/testing/check.h"
#include "tests/trainer/trainer_testing.h"
#include "trainer/ema.h"
#include "trainer/recipe.h"
#include "trainer/registries.h"
#include "trainer/schedule.h"

namespace dcae::trainer {
namespace {

using dcae::testing::random_tensor;

TEST(Schedule, ConstantWithLinearWarmup) {
  ScheduleConfig c;
  c.name = "constant";
  c.warmup_steps = 4;
  c.warmup_init_ratio = 0.1;
  auto s = make_schedule(c);
  EXPECT_DOUBLE_EQ(s->factor(0), 0.1);
  EXPECT_DOUBLE_EQ(s->factor(1), 0.1 + 0.9 * 0.25);
  EXPECT_DOUBLE_EQ(s->factor(2), 0.55);
  EXPECT_DOUBLE_EQ(s->factor(4), 1.0);
  EXPECT_DOUBLE_EQ(s->factor(1000000), 1.0);
  EXPECT_DOUBLE_EQ(s->lr(2, 6.4e-5), 0.55 * 6.4e-5);
  c.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(make_schedule(c)->factor(0), 1.0);  // no warmup: full lr from the start
}

TEST(Schedule, CosineDecaysToMinRatioAfterWarmup) {
  ScheduleConfig c;
  c.name = "cosine";
  c.warmup_steps = 2;
  c.warmup_init_ratio = 0.0;
  c.min_lr_ratio = 0.1;
  c.decay_steps = 12;
  auto s = make_schedule(c);
  EXPECT_DOUBLE_EQ(s->factor(0), 0.0);
  EXPECT_DOUBLE_EQ(s->factor(1), 0.5);
  EXPECT_DOUBLE_EQ(s->factor(2), 1.0);
  EXPECT_NEAR(s->factor(7), 0.55, 1e-15);  // halfway: (1 + min) / 2
  EXPECT_NEAR(s->factor(4), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 0.2)), 1e-15);
  EXPECT_NEAR(s->factor(12), 0.1, 1e-15);
  EXPECT_NEAR(s->factor(50), 0.1, 1e-15);  // held after the horizon
  for (int64_t step = 3; step < 13; ++step) EXPECT_LT(s->factor(step), s->factor(step - 1));
  c.decay_steps = 2;
  EXPECT_THROW(make_schedule(c), Error);  // no room to decay
  c.name = "linear";
  try {
    make_schedule(c);
    FAIL() << "unknown schedule accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown lr schedule 'linear'; known: constant, cosine"), std::string::npos);
  }
}

TEST(Schedule, ConfigFromRecipeDefaultsTheHorizonToTrainSteps) {
  const Recipe r = validate_recipe(resolve_recipe_text(R"(
[model]
name = "tiny"
[data]
synthetic = true
[train]
steps = 500
[schedule]
name = "cosine"
warmup_steps = 50
min_lr_ratio = 0.05
)", "inline"), dcae_recipe_schema());
  const ScheduleConfig c = schedule_config(r, "schedule", r.get<int64_t>("train.steps"));
  EXPECT_EQ(c.decay_steps, 500);
  EXPECT_EQ(c.warmup_steps, 50);
  auto s = make_schedule(c);
  EXPECT_NEAR(s->factor(500), 0.05, 1e-15);
  EXPECT_EQ(s->to_json()["name"], "cosine");
  EXPECT_EQ(schedule_config(r, "disc_schedule", 500).name, "constant");
}

TEST(Ema, AveragesWithWarmupDecayAgainstAReferenceLoop) {
  for (bool warmup : {false, true}) {
    Tensor w = random_tensor({6}, 1).set_requires_grad(true);
    Ema ema({{"w", w}}, 0.9, warmup);
    std::vector<double> shadow = w.to_vector<double>();
    for (int s = 0; s < 5; ++s) {
      Tensor(w).copy_(random_tensor({6}, 10 + s));
      const double d = warmup ? std::min(0.9, (1.0 + s) / (10.0 + s)) : 0.9;
      EXPECT_DOUBLE_EQ(ema.next_decay(), d);
      ema.update();
      const std::vector<double> value = w.to_vector<double>();
      for (size_t i = 0; i < shadow.size(); ++i) shadow[i] = d * shadow[i] + (1 - d) * value[i];
    }
    EXPECT_EQ(ema.num_updates(), 5);
    EXPECT_TRUE(dcae::testing::all_close(ema.shadows()[0].second, from_doubles(shadow, {6}, DType::f64), 1e-14, 1e-14))
        << "warmup " << warmup;
  }
  EXPECT_THROW(Ema({}, 1.0), Error);
}

TEST(Ema, ShadowsAreFp32AndSwapInForEvaluation) {
  testing::TinyNet net(3, DType::bf16);
  Ema ema(net.named_parameters(), 0.5, /*warmup=*/false);
  EXPECT_EQ(ema.shadows()[0].second.dtype(), DType::f32);
  // Move the weights, update from fp32 values (as from optimizer masters), then swap in and out.
  std::vector<nn::NamedTensor> masters;
  for (const auto& [name, p] : net.named_parameters()) masters.emplace_back(name, random_tensor(p.shape(), 7, DType::f32));
  const std::vector<float> shadow_before = ema.shadows()[0].second.to_vector<float>();
  ema.update_from(masters);
  const std::vector<float> m0 = masters[0].second.to_vector<float>(), shadow = ema.shadows()[0].second.to_vector<float>();
  for (size_t i = 0; i < shadow.size(); ++i) EXPECT_FLOAT_EQ(shadow[i], shadow_before[i] + 0.5f * (m0[i] - shadow_before[i]));

  const std::vector<float> training = net.fc1->weight.to_vector<float>();
  {
    EmaSwapGuard use_ema(&ema);
    EXPECT_TRUE(ema.swapped_in());
    EXPECT_EQ(net.fc1->weight.to_vector<float>(), ema.shadows()[0].second.to(DType::bf16).to_vector<float>());
    EXPECT_THROW(ema.update(), Error);  // no averaging of the averaged weights
    EXPECT_THROW(ema.swap_in(), Error);
  }
  EXPECT_FALSE(ema.swapped_in());
  EXPECT_EQ(net.fc1->weight.to_vector<float>(), training);  // restored bit for bit
  EXPECT_THROW(ema.swap_out(), Error);
  EmaSwapGuard no_ema(nullptr);  // a run without EMA evaluates the weights as they are

  const std::vector<nn::NamedTensor> reversed(masters.rbegin(), masters.rend());
  ema.update_from(reversed);  // matched by name, not position
  EXPECT_EQ(ema.num_updates(), 2);
  std::vector<nn::NamedTensor> wrong = masters;
  wrong[1].first = "fc1.gamma";
  EXPECT_THROW(ema.update_from(wrong), Error);
  wrong.pop_back();
  EXPECT_THROW(ema.update_from(wrong), Error);
}

TEST(Ema, StateSavesAndLoadsWithValidation) {
  testing::TinyNet net(4);
  Ema ema(net.named_parameters(), 0.99);
  for (int i = 0; i < 3; ++i) {
    Tensor(net.fc2->weight).copy_(random_tensor(net.fc2->weight.shape(), 30 + i, DType::f32));
    ema.update();
  }
  std::map<std::string, Tensor> saved;
  for (const auto& [name, t] : ema.state_tensors()) saved[name] = t.clone();
  const nlohmann::json scalars = ema.state_json();
  testing::TinyNet other(5);
  Ema restored(other.named_parameters(), 0.99);
  restored.load_state(saved, scalars);
  EXPECT_EQ(restored.num_updates(), 3);
  EXPECT_DOUBLE_EQ(restored.next_decay(), ema.next_decay());
  for (size_t i = 0; i < saved.size(); ++i)
    EXPECT_EQ(restored.shadows()[i].second.to_vector<float>(), ema.shadows()[i].second.to_vector<float>());

  auto wrong = saved;
  wrong["fc1.bias"] = zeros({7});
  try {
    restored.load_state(wrong, scalars);
    FAIL() << "a wrong shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'fc1.bias' is Tensor[7] f32 cpu, expected Tensor[6] f32 cpu"), std::string::npos)
        << e.what();
  }
  auto extra = saved;
  extra["decoder.weight"] = zeros({1});
  EXPECT_THROW(restored.load_state(extra, scalars), Error);
  auto missing = saved;
  missing.erase("norm.weight");
  EXPECT_THROW(restored.load_state(missing, scalars), Error);
}

}  // namespace
}  // namespace dcae::trainer
