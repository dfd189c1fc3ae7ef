// The training job in process: trainable sets and frozen parameters, memory of phase-2 style training, the GAN
// path, non-finite steps, plugin losses, gradient accumulation, reduced precision, model.init_from.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/autograd/engine.h"
#include "core/tensor/storage.h"
#include "nn/loss_nets/lpips.h"
#include "nn/io/safetensors.h"
#include "tests/testing/check.h"
#include "tests/trainer/job_testing.h"
#include "trainer/gan_loss.h"
#include "trainer/registries.h"

namespace dcae::trainer {
namespace {

using testing::bit_identical;
using testing::error_of;
using testing::ScratchDir;
using testing::snapshot;
using testing::tiny_recipe;

double term(const StepResult& r, const std::string& name) {
  for (const auto& [n, v] : r.losses)
    if (n == name) return v;
  return std::nan("");
}
bool has_term(const StepResult& r, const std::string& name) { return !std::isnan(term(r, name)); }

TEST(DcaeJob, BuiltinsAreRegistered) {
  const Registries& r = registries();
  for (const char* model : {"dc-ae-f32c32-in-1.0", "dc-ae-f64c128-in-1.0", "dc-ae-f128c512-in-1.0", "dc-ae-custom"})
    EXPECT_TRUE(r.models.contains(model)) << model;
  EXPECT_EQ(r.losses.names(), (std::vector<std::string>{"gan", "l1", "lpips", "mse"}));
  EXPECT_EQ(r.datasets.names(), (std::vector<std::string>{"folder", "shards", "synthetic"}));
}

TEST(DcaeJob, FrozenParametersStayBitIdenticalAndGetNoOptimizerState) {
  for (const auto& globs : {testing::tiny_phase2_globs(), testing::tiny_phase3_globs()}) {
    ScratchDir dir;
    const bool phase3 = globs == testing::tiny_phase3_globs();
    // Phase 3 trains with the GAN, as the recipe does; its discriminator must not touch the frozen model either.
    DcaeJob job(tiny_recipe(dir, {"train.trainable=" + testing::globs_toml(globs)},
                            phase3 ? "[loss]\ngan = 0.5\ndisc_layers = 1\ndisc_channels = 8\n" : ""));
    const auto before = snapshot(job.model());
    std::vector<std::string> frozen, trainable;
    for (const auto& [name, t] : job.model().named_parameters()) (t.requires_grad() ? trainable : frozen).push_back(name);
    ASSERT_FALSE(frozen.empty());
    ASSERT_FALSE(trainable.empty());
    for (int i = 0; i < 2; ++i) EXPECT_FALSE(job.train_step().skipped);
    size_t changed = 0;
    for (const auto& [name, t] : job.model().named_parameters()) {
      if (!t.requires_grad()) {
        EXPECT_TRUE(bit_identical(t, before.at(name))) << name;
        EXPECT_THROW(job.optimizer().state(name), Error) << name;  // no state for a frozen parameter
      } else {
        changed += !bit_identical(t, before.at(name));
        EXPECT_EQ(job.optimizer().state(name).step, 2) << name;
      }
    }
    EXPECT_EQ(changed, trainable.size());
    // A backward by hand fills gradients of the trainable parameters only.
    const Tensor x = dcae::testing::random_tensor({1, 16, 16, 3}, 51, DType::f32, 0.5);
    autograd::backward(ops::mean(ops::abs(ops::sub(job.train_model().decode(job.train_model().encode(x)), x))));
    for (const auto& [name, t] : job.model().named_parameters()) EXPECT_EQ(t.grad().defined(), t.requires_grad()) << name;
    job.optimizer().zero_grad();
    size_t in_optimizer = 0;
    for (const auto& g : job.optimizer().groups()) in_optimizer += g.params.size();
    EXPECT_EQ(in_optimizer, trainable.size());
    // The encoder body is frozen in both phases: its BatchNorm-free stages keep every buffer too.
    for (const auto& [name, t] : job.model().named_buffers())
      if (name.rfind("encoder.", 0) == 0) {
        EXPECT_TRUE(bit_identical(t, before.at(name))) << name;
      }
    if (phase3) {
      EXPECT_NE(job.loss_term("gan"), nullptr);
    }
  }
}

// Peak host memory of one training step above what was in use before it.
size_t step_peak_bytes(DcaeJob& job) {
  CpuAllocator& allocator = CpuAllocator::instance();
  const size_t before = allocator.bytes_in_use();
  allocator.reset_peak();
  job.train_step();
  return allocator.peak_bytes() - before;
}

TEST(DcaeJob, PhaseTwoStyleTrainingUsesLessMemoryThanPhaseOne) {
  ScratchDir dir;
  const std::vector<std::string> common = {"data.resolution=32", "data.batch_size=4", "eval.every=0"};
  DcaeJob phase1(tiny_recipe(dir, common, "", "p1.toml"));
  std::vector<std::string> p2 = common;
  p2.push_back("train.trainable=" + testing::globs_toml(testing::tiny_phase2_globs()));
  DcaeJob phase2(tiny_recipe(dir, p2, "", "p2.toml"));
  // Second steps: optimizer state exists by then, so this is activations + gradients.
  step_peak_bytes(phase1);
  step_peak_bytes(phase2);
  const size_t full = step_peak_bytes(phase1), adapted = step_peak_bytes(phase2);
  RecordProperty("phase1_step_peak_bytes", std::to_string(full));
  RecordProperty("phase2_step_peak_bytes", std::to_string(adapted));
  EXPECT_LT(static_cast<double>(adapted), 0.85 * static_cast<double>(full)) << full << " vs " << adapted;
}

TEST(DcaeJob, GanPathTrainsTheDiscriminatorWithAFiniteAdaptiveWeight) {
  ScratchDir dir;
  DcaeJob job(tiny_recipe(dir, {"train.trainable=" + testing::globs_toml(testing::tiny_phase3_globs())},
                          "[loss]\ngan = 0.5\ngan_start_step = 1\nadaptive_gan_weight = true\ndisc_layers = 1\n"
                          "disc_channels = 8\n"));
  auto* gan = dynamic_cast<GanLoss*>(job.loss_term("gan"));
  ASSERT_NE(gan, nullptr);
  const auto disc_before = snapshot(gan->discriminator());
  const StepResult first = job.train_step();  // before gan_start_step: no GAN at all
  EXPECT_FALSE(has_term(first, "gan"));
  EXPECT_FALSE(has_term(first, "d_loss"));
  for (const auto& [name, t] : gan->discriminator().named_parameters())
    EXPECT_TRUE(bit_identical(t, disc_before.at(name))) << name;
  const StepResult second = job.train_step();
  ASSERT_FALSE(second.skipped);
  for (const char* name : {"gan", "gan_weight", "d_loss", "logits_real", "logits_fake"})
    EXPECT_TRUE(has_term(second, name) && std::isfinite(term(second, name))) << name;
  EXPECT_GT(term(second, "gan_weight"), 0.0);
  EXPECT_LE(term(second, "gan_weight"), 1e4);
  // The total is l1 + adaptive weight * gan weight * gan.
  EXPECT_NEAR(term(second, "loss"), term(second, "l1") + term(second, "gan_weight") * 0.5 * term(second, "gan"), 1e-6);
  size_t changed = 0;
  for (const auto& [name, t] : gan->discriminator().named_parameters()) changed += !bit_identical(t, disc_before.at(name));
  EXPECT_GT(changed, 0u);
  EXPECT_EQ(gan->optimizer().state(gan->discriminator().named_parameters().front().first).step, 1);

  // The clamp: a tiny maximum caps the weight exactly.
  ScratchDir dir2;
  DcaeJob capped(tiny_recipe(dir2, {},
                             "[loss]\ngan = 0.5\nadaptive_gan_weight = true\nadaptive_gan_max = 1e-3\ndisc_layers = 1\n"
                             "disc_channels = 8\n"));
  EXPECT_EQ(term(capped.train_step(), "gan_weight"), 1e-3);
}

TEST(DcaeJob, GanObjectivesMatchTheirFormulas) {
  for (const char* objective : {"hinge", "non_saturating"}) {
    ScratchDir dir;
    const Recipe recipe = tiny_recipe(dir, {}, std::string("[loss]\ngan = 1.0\ngan_loss = \"") + objective +
                                                   "\"\ndisc_layers = 1\ndisc_channels = 8\ndisc_norm = \"none\"\n");
    LossSpec spec;
    spec.name = "gan";
    spec.recipe = &recipe;
    spec.seed = 5;
    spec.total_steps = 4;
    GanLoss gan(spec);
    const Tensor fake = dcae::testing::random_tensor({2, 16, 16, 3}, 21, DType::f32);
    const Tensor real = dcae::testing::random_tensor({2, 16, 16, 3}, 22, DType::f32);
    const bool hinge = std::string(objective) == "hinge";
    auto softplus = [](double x) { return std::log1p(std::exp(-std::abs(x))) + std::max(x, 0.0); };
    const std::vector<float> lf = gan.discriminator().forward(fake).to_vector<float>();
    const std::vector<float> lr = gan.discriminator().forward(real).to_vector<float>();
    double g = 0, d_real = 0, d_fake = 0;
    for (float v : lf) {
      g += hinge ? -v : softplus(-v);
      d_fake += hinge ? std::max(0.0, 1.0 + v) : softplus(v);
    }
    for (float v : lr) d_real += hinge ? std::max(0.0, 1.0 - v) : softplus(-v);
    const double n = static_cast<double>(lf.size());
    EXPECT_NEAR(gan.compute(fake, real, 0).item<double>(), g / n, 1e-5) << objective;
    const LossTerms logged = gan.update_critic({{fake, real}}, 0);
    EXPECT_EQ(logged.front().first, "d_loss");
    EXPECT_NEAR(logged.front().second, 0.5 * (d_real / n + d_fake / n), 1e-5) << objective;
  }
}

TEST(DcaeJob, MeanSoftplusIsStableAndDifferentiable) {
  const Tensor x = dcae::testing::random_tensor({3, 5}, 31, DType::f64, 4.0);
  const std::vector<double> v = x.to_vector<double>();
  double expected = 0;
  for (double e : v) expected += std::log1p(std::exp(e));
  EXPECT_NEAR(mean_softplus(x).item<double>(), expected / v.size(), 1e-12);
  EXPECT_NEAR(mean_softplus(full({2}, 800.0, DType::f64)).item<double>(), 800.0, 1e-9);  // no overflow
  EXPECT_TRUE(dcae::testing::gradcheck([](const std::vector<Tensor>& in) { return mean_softplus(in[0]); },
                                       {Tensor(x.clone()).set_requires_grad(true)}));
}

TEST(DcaeJob, NonFiniteLossesAreSkippedThenStopTheRun) {
  ScratchDir dir;
  DcaeJob job(tiny_recipe(dir, {"train.steps=10", "train.max_nonfinite_steps=3"},
                          "[loss]\nl1 = 0.0\ntest_nan_from = 2\n[loss.terms]\ntest_nan = 1.0\n", "nan.toml",
                          DCAE_TEST_LOSS_PLUGIN));
  EXPECT_FALSE(job.train_step().skipped);
  EXPECT_FALSE(job.train_step().skipped);
  const auto before = snapshot(job.model());
  for (int i = 0; i < 2; ++i) {
    const StepResult r = job.train_step();
    EXPECT_TRUE(r.skipped);
    EXPECT_TRUE(std::isnan(r.losses.front().second));
  }
  for (const auto& [name, t] : job.model().state()) EXPECT_TRUE(bit_identical(t, before.at(name))) << name;
  EXPECT_EQ(job.step(), 4);
  const std::string m = error_of([&] { job.train_step(); });
  EXPECT_NE(m.find("stopping at step 5: 3 non-finite steps in a row"), std::string::npos) << m;
}

TEST(DcaeJob, APluginLossTrainsFromARecipe) {
  ScratchDir dir;
  DcaeJob job(tiny_recipe(dir, {}, "[loss]\ntest_scale = 3.0\n[loss.terms]\ntest_scaled_l1 = 0.5\n", "plugin.toml",
                          DCAE_TEST_LOSS_PLUGIN));
  ASSERT_NE(job.loss_term("test_scaled_l1"), nullptr);
  const StepResult r = job.train_step();
  EXPECT_NEAR(term(r, "test_scaled_l1"), 3.0 * term(r, "l1"), 1e-6);
  EXPECT_NEAR(term(r, "loss"), term(r, "l1") + 0.5 * term(r, "test_scaled_l1"), 1e-6);
  // Unknown names and built-ins under loss.terms are errors that say what to do.
  ScratchDir dir2;
  std::string m = error_of([&] { DcaeJob bad(tiny_recipe(dir2, {}, "[loss.terms]\nperceptual = 1.0\n")); });
  EXPECT_NE(m.find("unknown loss 'perceptual'; known: "), std::string::npos) << m;
  m = error_of([&] { DcaeJob bad(tiny_recipe(dir2, {}, "[loss.terms]\nl1 = 1.0\n", "b.toml")); });
  EXPECT_NE(m.find("with loss.l1 instead"), std::string::npos) << m;
}

TEST(DcaeJob, GradientAccumulationEqualsOneLargerBatch) {
  // SGD without momentum: the update is lr * gradient, so equal gradients give equal weights.
  const std::vector<std::string> sgd = {"optim.name=\"sgd\"", "optim.momentum=0.0", "optim.lr=0.05", "eval.every=0"};
  ScratchDir a, b;
  std::vector<std::string> large = sgd, accumulated = sgd;
  large.push_back("data.batch_size=4");
  accumulated.insert(accumulated.end(), {"data.batch_size=2", "train.grad_accum=2"});
  DcaeJob one(tiny_recipe(a, large));
  DcaeJob two(tiny_recipe(b, accumulated));
  one.model().eval();  // BatchNorm uses its running statistics: per-batch statistics would differ
  two.model().eval();
  const StepResult r1 = one.train_step(), r2 = two.train_step();
  EXPECT_NEAR(term(r1, "l1"), term(r2, "l1"), 1e-6);
  const auto wa = snapshot(one.model()), wb = snapshot(two.model());
  for (const auto& [name, t] : wa)
    if (is_floating(t.dtype())) {
      EXPECT_TRUE(dcae::testing::all_close(wb.at(name), t, 1e-6, 1e-5)) << name;
    }
}

TEST(DcaeJob, ReducedPrecisionKeepsFp32MastersAndTracksTheFp32Loss) {
  ScratchDir d32, d16, dh;
  DcaeJob f32(tiny_recipe(d32, {"eval.every=0"}));
  DcaeJob bf16(tiny_recipe(d16, {"eval.every=0", "train.precision=\"bf16\""}));
  DcaeJob fp16(tiny_recipe(dh, {"eval.every=0", "train.precision=\"fp16\""}));
  for (const auto& [name, t] : bf16.model().named_parameters()) ASSERT_EQ(t.dtype(), DType::bf16) << name;
  for (const auto& [name, t] : bf16.optimizer().named_masters()) ASSERT_EQ(t.dtype(), DType::f32) << name;
  const StepResult a = f32.train_step(), b = bf16.train_step(), h = fp16.train_step();
  EXPECT_NEAR(term(b, "l1"), term(a, "l1"), 2e-2 * term(a, "l1"));
  EXPECT_NEAR(term(h, "l1"), term(a, "l1"), 5e-3 * term(a, "l1"));
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(std::isfinite(term(bf16.train_step(), "loss")));
    EXPECT_TRUE(std::isfinite(term(fp16.train_step(), "loss")));
  }
  // The cast keeps the trainable set.
  ScratchDir dp;
  DcaeJob frozen_bf16(tiny_recipe(dp, {"eval.every=0", "train.precision=\"bf16\"",
                                       "train.trainable=" + testing::globs_toml(testing::tiny_phase2_globs())}));
  int64_t expected = 0;
  for (const auto& [name, t] : f32.model().named_parameters())
    for (const auto& glob : testing::tiny_phase2_globs()) {
      if (nn::glob_match(glob, name)) {
        expected += t.numel();
        break;
      }
    }
  EXPECT_EQ(frozen_bf16.model().num_parameters(true), expected);
}

TEST(DcaeJob, LpipsTermReadsItsWeightsFile) {
  ScratchDir dir;
  Generator gen(3);
  nn::InitOptions init;
  init.generator = &gen;
  nn::Lpips net(init);
  for (const auto& [name, t] : net.named_parameters())  // learned LPIPS heads are non-negative
    if (name.rfind("lin", 0) == 0) nn::assign_in_place(t, ops::abs(t));
  nn::write_safetensors(dir.file("lpips.safetensors"), net.state());
  DcaeJob job(tiny_recipe(dir, {"eval.every=0"},
                          "[loss]\nlpips = 0.5\nlpips_weights = \"" + dir.file("lpips.safetensors") + "\"\n"));
  const StepResult r = job.train_step();
  EXPECT_GT(term(r, "lpips"), 0.0);
  const EvalResult eval = job.evaluate();  // evaluation reports LPIPS too when the recipe trains with it
  ASSERT_TRUE(eval.lpips.has_value());
  EXPECT_GT(*eval.lpips, 0.0);
  EXPECT_NEAR(term(r, "loss"), term(r, "l1") + 0.5 * term(r, "lpips"), 1e-6);
  // The same distance the net computes on its own is what the term returns.
  LossSpec spec;
  spec.name = "lpips";
  spec.recipe = &job.recipe();
  auto lpips = registries().losses.create("lpips", spec);
  const Tensor x = dcae::testing::random_tensor({2, 16, 16, 3}, 41, DType::f32, 0.5);
  const Tensor y = dcae::testing::random_tensor({2, 16, 16, 3}, 42, DType::f32, 0.5);
  EXPECT_NEAR(lpips->compute(x, y, 0).item<double>(), ops::mean(net.distance(x, y)).item<double>(), 1e-6);
  EXPECT_NEAR(lpips->compute(x, x, 0).item<double>(), 0.0, 1e-7);
  ScratchDir other;
  const std::string m = error_of([&] {
    DcaeJob bad(tiny_recipe(other, {}, "[loss]\nlpips = 0.5\nlpips_weights = \"" + other.file("none.safetensors") + "\"\n"));
  });
  EXPECT_NE(m.find("none.safetensors"), std::string::npos) << m;
}

TEST(DcaeJob, InitFromLoadsSafetensorsAndCheckpoints) {
  ScratchDir dir;
  DcaeJob source(tiny_recipe(dir, {"eval.every=0"}, "", "a.toml"));
  source.train_step();
  const std::string file = dir.file("weights.safetensors");
  nn::write_safetensors(file, source.model().state());
  const std::string checkpoint = source.save();
  for (const std::string& from : {file, checkpoint, source.checkpoint_dir()}) {
    ScratchDir other;
    DcaeJob loaded(tiny_recipe(other, {"model.init_from=\"" + from + "\"", "train.seed=9"}));
    const auto weights = snapshot(loaded.model());
    for (const auto& [name, t] : source.model().state())
      EXPECT_TRUE(bit_identical(weights.at(name), t)) << name << " from " << from;
  }
}

}  // namespace
}  // namespace dcae::trainer
