#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd/engine.h"
#include "tests/testing/check.h"
#include "tests/trainer/trainer_testing.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/clip.h"
#include "trainer/optim/sgd.h"
#include "trainer/recipe.h"
#include "trainer/registries.h"

namespace dcae::trainer {
namespace {

using dcae::testing::random_tensor;

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

std::vector<ParamGroup> one_group(const std::vector<nn::NamedTensor>& params, double lr, double wd) {
  ParamGroup g;
  g.name = "all";
  g.params = params;
  g.base_lr = g.lr = lr;
  g.weight_decay = wd;
  return {g};
}

// AdamW as the paper writes it (bias-corrected moments), in double: an independent derivation of what
// torch.optim.AdamW computes.
struct AdamWReference {
  std::vector<double> p, m, v;
  int64_t t = 0;
  void step(const std::vector<double>& g, double lr, double b1, double b2, double eps, double wd) {
    ++t;
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(b1, t)), v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

void run_adamw_against_reference(DType dtype, double tolerance) {
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  Tensor w = random_tensor({7}, 1, dtype).set_requires_grad(true);
  AdamWReference ref;
  ref.p = w.to_vector<double>();
  AdamW optim(one_group({{"w", w}}, lr, wd), b1, b2, eps);
  for (int step = 0; step < 4; ++step) {
    const Tensor g = random_tensor({7}, 100 + step, dtype);
    w.set_grad(g);
    optim.step();
    ref.step(g.to_vector<double>(), lr, b1, b2, eps, wd);
    EXPECT_TRUE(dcae::testing::all_close(w, from_doubles(ref.p, {7}, dtype), tolerance, tolerance)) << "step " << step;
  }
  EXPECT_EQ(optim.state("w").step, 4);
  EXPECT_EQ(optim.state("w").slots.at("exp_avg").dtype(), dtype);
}

TEST(AdamW, MatchesTheBiasCorrectedReferenceInF64AndF32) {
  run_adamw_against_reference(DType::f64, 1e-13);
  run_adamw_against_reference(DType::f32, 1e-6);
}

TEST(AdamW, FirstStepIsLrTimesSignByHand) {
  // At step 1 the bias-corrected moments are g and g^2: p1 = p0 (1 - lr wd) - lr g / (|g| + eps).
  Tensor w = from_doubles({1.0, -2.0, 0.5}, {3}, DType::f64).set_requires_grad(true);
  AdamW optim(one_group({{"w", w}}, 0.1, 0.01), 0.9, 0.999, 1e-8);
  w.set_grad(from_doubles({0.3, -4.0, 2e-3}, {3}, DType::f64));
  optim.step();
  const std::vector<double> got = w.to_vector<double>();
  EXPECT_NEAR(got[0], 1.0 * (1 - 0.001) - 0.1 * 0.3 / (0.3 + 1e-8), 1e-15);
  EXPECT_NEAR(got[1], -2.0 * (1 - 0.001) + 0.1 * 4.0 / (4.0 + 1e-8), 1e-15);
  EXPECT_NEAR(got[2], 0.5 * (1 - 0.001) - 0.1 * 2e-3 / (2e-3 + 1e-8), 1e-15);
}

TEST(AdamW, SkipsParametersWithoutGradientAndLeavesFrozenOnesAlone) {
  testing::TinyNet net(2);
  net.norm->weight.set_requires_grad(false);  // frozen: no group, no state
  OptimizerConfig config;
  config.lr = 0.1;
  config.weight_decay = 0.5;
  auto optim = make_optimizer(net.named_parameters(), config);
  const Tensor frozen_before = net.norm->weight.clone();
  const Tensor fc2_before = net.fc2->weight.clone();
  autograd::backward(ops::sum(net.fc1->forward(random_tensor({3, 4}, 3, DType::f32))));  // grads for fc1 only
  optim->step();
  EXPECT_EQ(net.norm->weight.to_vector<float>(), frozen_before.to_vector<float>());
  EXPECT_EQ(net.fc2->weight.to_vector<float>(), fc2_before.to_vector<float>());  // no gradient: untouched
  EXPECT_EQ(optim->state("fc2.weight").step, 0);
  EXPECT_EQ(optim->state("fc1.weight").step, 1);
  EXPECT_THROW(optim->state("norm.weight"), Error);
  for (const auto& [name, t] : optim->state_tensors()) EXPECT_EQ(name.find("norm"), std::string::npos) << name;
}

TEST(ParamGroups, NoDecayPatternsSplitNormsAndBiases) {
  testing::TinyNet net(4);
  OptimizerConfig config;  // default no_decay: "*.bias", "*norm*.weight"
  config.lr = 0.1;
  config.weight_decay = 0.5;
  const std::vector<ParamGroup> groups = build_param_groups(net.named_parameters(), config);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "default");
  EXPECT_EQ(groups[0].weight_decay, 0.5);
  EXPECT_EQ(groups[1].name, "default.no_decay");
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  std::vector<std::string> decayed, undecayed;
  for (const auto& [name, t] : groups[0].params) decayed.push_back(name);
  for (const auto& [name, t] : groups[1].params) undecayed.push_back(name);
  EXPECT_EQ(decayed, (std::vector<std::string>{"fc1.weight", "fc2.weight"}));
  EXPECT_EQ(undecayed, (std::vector<std::string>{"fc1.bias", "norm.weight", "fc2.bias"}));

  // With zero gradients Adam's step is zero, so only the decoupled decay moves weights: p *= 1 - lr*wd.
  AdamW optim(build_param_groups(net.named_parameters(), config), config);
  const Tensor w_before = net.fc1->weight.clone(), b_before = net.fc1->bias.clone(), n_before = net.norm->weight.clone();
  for (const Tensor& p : net.parameters()) p.set_grad(zeros_like(p));
  optim.step();
  EXPECT_TRUE(dcae::testing::all_close(net.fc1->weight, ops::mul(w_before, 1 - 0.1 * 0.5), 1e-7, 1e-6));
  EXPECT_EQ(net.fc1->bias.to_vector<float>(), b_before.to_vector<float>());
  EXPECT_EQ(net.norm->weight.to_vector<float>(), n_before.to_vector<float>());
}

TEST(ParamGroups, GroupsTakeTheirOwnLrAndWeightDecayAndScheduleScalesThem) {
  testing::TinyNet net(5);
  OptimizerConfig config;
  config.lr = 1e-3;
  config.weight_decay = 0.1;
  config.groups.push_back({{"fc2.*"}, 0.5, 0.0});
  config.groups.push_back({{"norm.*", "fc2.bias"}, std::nullopt, 0.3});  // fc2.bias went to the first group
  auto optim = make_optimizer(net.named_parameters(), config);
  std::map<std::string, std::pair<double, double>> seen;
  for (const ParamGroup& g : optim->groups()) seen[g.name] = {g.lr, g.weight_decay};
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen["default.no_decay"], std::make_pair(1e-3, 0.0));
  EXPECT_EQ(seen["groups[0]"], std::make_pair(0.5, 0.0));
  EXPECT_EQ(seen["groups[0].no_decay"], std::make_pair(0.5, 0.0));
  EXPECT_EQ(seen["groups[1].no_decay"], std::make_pair(1e-3, 0.0));  // norm.weight: no decay wins over 0.3
  EXPECT_EQ(seen.count("groups[1]"), 0u);                              // empty groups are dropped
  EXPECT_EQ(seen["default"], std::make_pair(1e-3, 0.1));
  optim->set_lr_factor(0.25);
  for (const ParamGroup& g : optim->groups()) EXPECT_EQ(g.lr, g.base_lr * 0.25);

  OptimizerConfig typo = config;
  typo.groups.push_back({{"decoder.*"}, 1.0, std::nullopt});
  std::string m = error_of([&] { build_param_groups(net.named_parameters(), typo); });
  EXPECT_NE(m.find("param group 2 [decoder.*] matches no trainable parameter"), std::string::npos) << m;
  for (const Tensor& p : net.parameters()) Tensor(p).set_requires_grad(false);
  m = error_of([&] { build_param_groups(net.named_parameters(), OptimizerConfig{}); });
  EXPECT_NE(m.find("no trainable parameter"), std::string::npos) << m;
}

TEST(ParamGroups, OptimizerConfigComesFromTheRecipe) {
  const Recipe r = validate_recipe(resolve_recipe_text(R"(
[model]
name = "tiny"
[data]
synthetic = true
[train]
steps = 1
[optim]
lr = 2e-4
betas = [0.5, 0.9]
weight_decay = 0.01
[[optim.groups]]
params = ["fc2.*"]
lr = 1e-5
[disc_optim]
name = "sgd"
)", "inline"), dcae_recipe_schema());
  const OptimizerConfig c = optimizer_config(r, "optim");
  EXPECT_EQ(c.lr, 2e-4);
  EXPECT_EQ(c.beta1, 0.5);
  EXPECT_EQ(c.beta2, 0.9);
  EXPECT_EQ(c.weight_decay, 0.01);
  EXPECT_EQ(c.no_decay, (std::vector<std::string>{"*.bias", "*norm*.weight"}));
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_EQ(c.groups[0].lr, 1e-5);
  EXPECT_FALSE(c.groups[0].weight_decay.has_value());
  EXPECT_EQ(c.recipe, &r);
  const OptimizerConfig d = optimizer_config(r, "disc_optim");
  EXPECT_EQ(d.name, "sgd");
  EXPECT_EQ(d.lr, 6.4e-5);
}

TEST(Sgd, MomentumNesterovAndWeightDecayMatchTorchFormulas) {
  for (bool nesterov : {false, true}) {
    const double lr = 0.05, mu = 0.9, wd = 0.01;
    Tensor w = random_tensor({5}, 7).set_requires_grad(true);
    std::vector<double> p = w.to_vector<double>(), buf(5, 0.0);
    Sgd optim(one_group({{"w", w}}, lr, wd), mu, nesterov);
    for (int step = 0; step < 3; ++step) {
      const Tensor g = random_tensor({5}, 20 + step);
      w.set_grad(g);
      optim.step();
      const std::vector<double> gv = g.to_vector<double>();
      for (size_t i = 0; i < p.size(); ++i) {
        double d = gv[i] + wd * p[i];
        buf[i] = step == 0 ? d : mu * buf[i] + d;
        d = nesterov ? d + mu * buf[i] : buf[i];
        p[i] -= lr * d;
      }
      EXPECT_TRUE(dcae::testing::all_close(w, from_doubles(p, {5}, DType::f64), 1e-14, 1e-14)) << nesterov << step;
    }
  }
  Tensor w = random_tensor({2}, 8).set_requires_grad(true);
  EXPECT_THROW(Sgd(one_group({{"w", w}}, 0.1, 0.0), 0.0, /*nesterov=*/true), Error);
}

TEST(MasterWeights, Bf16ParametersUpdateThroughAnFp32Master) {
  // Identical gradients into a bf16 and an f32 copy of one weight: the bf16 run's master follows the f32 run bit for
  // bit, and the bf16 weight is always the master rounded. The lr is far below bf16's resolution near 1.
  const Tensor init = random_tensor({64}, 9, DType::f32);
  Tensor w16 = init.to(DType::bf16).set_requires_grad(true);
  Tensor w32_from16 = w16.to(DType::f32).set_requires_grad(true);  // f32 run from the same (rounded) start
  AdamW a(one_group({{"w", w32_from16}}, 1e-4, 0.0), 0.9, 0.999, 1e-8);
  AdamW b(one_group({{"w", w16}}, 1e-4, 0.0), 0.9, 0.999, 1e-8);
  ASSERT_TRUE(b.masters().has_copy(0));
  EXPECT_FALSE(a.masters().has_copy(0));
  const std::vector<float> start = w16.to_vector<float>();
  for (int step = 0; step < 20; ++step) {
    const Tensor g = random_tensor({64}, 200 + step, DType::bf16);
    w32_from16.set_grad(g.to(DType::f32));
    w16.set_grad(g);
    a.step();
    b.step();
  }
  EXPECT_EQ(b.masters().master(0).to_vector<float>(), w32_from16.to_vector<float>());
  EXPECT_EQ(w16.to_vector<float>(), w32_from16.to(DType::bf16).to_vector<float>());
  EXPECT_NE(w16.to_vector<float>(), start);  // the accumulated updates do reach the bf16 weight
  bool saved_master = false;
  for (const auto& [name, t] : b.state_tensors()) saved_master = saved_master || name == "master.w";
  EXPECT_TRUE(saved_master);
  EXPECT_EQ(b.named_masters().at(0).second.dtype(), DType::f32);
}

TEST(OptimizerState, SaveAndLoadContinuesBitForBit) {
  for (const char* type : {"adamw", "sgd"}) {
    testing::TinyNet a(10), b(11);
    OptimizerConfig config;
    config.name = type;
    config.lr = 1e-2;
    config.weight_decay = 0.05;
    auto optim_a = make_optimizer(a.named_parameters(), config);
    const Tensor x = random_tensor({4, 4}, 12, DType::f32);
    auto train_step = [&](testing::TinyNet& net, Optimizer& optim) {
      optim.zero_grad();
      autograd::backward(ops::mean(ops::square(net.forward(x))));
      optim.step();
    };
    for (int i = 0; i < 3; ++i) train_step(a, *optim_a);
    // Copy a's weights into b and its optimizer state into a fresh optimizer; then both take the same steps.
    for (size_t i = 0; i < a.parameters().size(); ++i) Tensor(b.parameters()[i]).copy_(a.parameters()[i]);
    auto optim_b = make_optimizer(b.named_parameters(), config);
    std::map<std::string, Tensor> saved;
    for (const auto& [name, t] : optim_a->state_tensors()) saved[name] = t.clone();
    optim_b->load_state(saved, nlohmann::json::parse(optim_a->state_json().dump()));
    for (int i = 0; i < 2; ++i) {
      train_step(a, *optim_a);
      train_step(b, *optim_b);
    }
    for (size_t i = 0; i < a.parameters().size(); ++i)
      EXPECT_EQ(a.parameters()[i].to_vector<float>(), b.parameters()[i].to_vector<float>()) << type << " param " << i;
  }
}

TEST(OptimizerState, LoadingMismatchedStateNamesTheProblem) {
  testing::TinyNet net(13);
  OptimizerConfig config;
  auto adamw = make_optimizer(net.named_parameters(), config);
  for (const Tensor& p : net.parameters()) p.set_grad(ones(p.shape()));
  adamw->step();
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : adamw->state_tensors()) tensors[name] = t.clone();
  const nlohmann::json scalars = adamw->state_json();

  config.name = "sgd";
  auto sgd = make_optimizer(net.named_parameters(), config);
  EXPECT_NE(error_of([&] { sgd->load_state(tensors, scalars); }).find("state is for 'adamw', this optimizer is 'sgd'"),
            std::string::npos);

  auto fresh = make_optimizer(net.named_parameters(), OptimizerConfig{});
  auto wrong_shape = tensors;
  wrong_shape["exp_avg.fc1.weight"] = zeros({2, 2});
  std::string m = error_of([&] { fresh->load_state(wrong_shape, scalars); });
  EXPECT_NE(m.find("'exp_avg.fc1.weight' is Tensor[2, 2] f32 cpu, expected Tensor[6, 4] f32 cpu"), std::string::npos)
      << m;
  auto missing = tensors;
  missing.erase("exp_avg_sq.fc2.bias");
  m = error_of([&] { fresh->load_state(missing, scalars); });
  EXPECT_NE(m.find("no tensor 'exp_avg_sq.fc2.bias'"), std::string::npos) << m;
  auto extra = tensors;
  extra["exp_avg.decoder.weight"] = zeros({1});
  m = error_of([&] { fresh->load_state(extra, scalars); });
  EXPECT_NE(m.find("'exp_avg.decoder.weight' belongs to no parameter"), std::string::npos) << m;
  EXPECT_EQ(fresh->state("fc1.weight").step, 0);  // failed loads changed nothing

  Tensor(net.fc2->bias).set_requires_grad(false);  // a different trainable set: groups differ
  auto other = make_optimizer(net.named_parameters(), OptimizerConfig{});
  m = error_of([&] { other->load_state(tensors, scalars); });
  EXPECT_NE(m.find("param group 'default.no_decay'"), std::string::npos) << m;
  EXPECT_NE(m.find("only in checkpoint: [fc2.bias]"), std::string::npos) << m;
}

TEST(ClipGradNorm, ScalesToTheGlobalNormAndReportsNonFinite) {
  Tensor a = zeros({2}).set_requires_grad(true), b = zeros({1}, DType::bf16).set_requires_grad(true);
  Tensor c = zeros({3}).set_requires_grad(true);  // no gradient: ignored
  a.set_grad(from_doubles({3.0, 4.0}, {2}));
  b.set_grad(from_doubles({12.0}, {1}, DType::bf16));
  EXPECT_DOUBLE_EQ(grad_norm({a, b, c}), 13.0);
  GradNorm measured = clip_grad_norm({a, b, c}, 0.0);  // measure only
  EXPECT_DOUBLE_EQ(measured.norm, 13.0);
  EXPECT_FALSE(measured.clipped);
  EXPECT_EQ(a.grad().to_vector<float>(), (std::vector<float>{3.0f, 4.0f}));
  EXPECT_FALSE(clip_grad_norm({a, b}, 20.0).clipped);
  EXPECT_EQ(a.grad().to_vector<float>(), (std::vector<float>{3.0f, 4.0f}));  // below the limit: untouched

  const GradNorm clipped = clip_grad_norm({a, b, c}, 6.5);
  EXPECT_TRUE(clipped.clipped && clipped.finite);
  EXPECT_DOUBLE_EQ(clipped.norm, 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);
  EXPECT_FLOAT_EQ(a.grad().to_vector<float>()[0], static_cast<float>(3.0 * coef));
  EXPECT_FLOAT_EQ(a.grad().to_vector<float>()[1], static_cast<float>(4.0 * coef));
  EXPECT_NEAR(b.grad().to_vector<float>()[0], 6.0, 6.0 * 1e-2);  // bf16 gradient, rounded
  EXPECT_NEAR(grad_norm({a, b}), 6.5, 0.05);

  a.set_grad(from_doubles({NAN, 1.0}, {2}));
  const std::vector<float> b_before = b.grad().to_vector<float>();
  const GradNorm bad = clip_grad_norm({a, b}, 1.0);
  EXPECT_FALSE(bad.finite);
  EXPECT_FALSE(bad.clipped);
  EXPECT_EQ(b.grad().to_vector<float>(), b_before);
  a.set_grad(from_doubles({INFINITY, 1.0}, {2}));
  EXPECT_FALSE(clip_grad_norm({a}, 1.0).finite);

  // A non-contiguous gradient is scaled through a packed copy.
  Tensor m = zeros({2, 2}).set_requires_grad(true);
  m.set_grad(from_doubles({1, 2, 3, 4}, {2, 2}).transpose(0, 1));
  scale_grads({m}, 2.0);
  EXPECT_EQ(m.grad().to_vector<float>(), (std::vector<float>{2, 6, 4, 8}));
}

TEST(NonFiniteTracker, SkipsNonFiniteStepsAndStopsAfterTheLimitInARow) {
  NonFiniteTracker tracker(3);
  EXPECT_FALSE(tracker.skip(true, 1));
  EXPECT_TRUE(tracker.skip(false, 2));
  EXPECT_TRUE(tracker.skip(false, 3));
  EXPECT_FALSE(tracker.skip(true, 4));  // a finite step resets the run
  EXPECT_EQ(tracker.in_a_row(), 0);
  EXPECT_TRUE(tracker.skip(false, 5));
  EXPECT_TRUE(tracker.skip(false, 6));
  EXPECT_EQ(tracker.total_skipped(), 4);
  const std::string m = error_of([&] { tracker.skip(false, 7); });
  EXPECT_NE(m.find("stopping at step 7: 3 non-finite steps in a row"), std::string::npos) << m;
  NonFiniteTracker resumed(2);
  resumed.restore(1, 5);
  EXPECT_THROW(resumed.skip(false, 8), Error);
  EXPECT_THROW(NonFiniteTracker(0), Error);
}

}  // namespace
}  // namespace dcae::trainer
