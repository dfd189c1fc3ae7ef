// The samplers on Gaussian data, where the ideal denoiser is known in closed form: x_0 ~ N(mu, s^2) per element.
// The ODE samplers (DPM-Solver++, Euler, Heun) must map each noise sample to the exact solution of the probability
// flow; the ancestral DDPM sampler must reproduce the data's mean and variance. Plus classifier-free guidance.
#include <gtest/gtest.h>

#include <iostream>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/view.h"
#include "tests/testing/check.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/registries.h"

namespace dcae::trainer::diffusion {
namespace {

constexpr double kMu = 0.5, kS = 0.6;

std::unique_ptr<Objective> objective(const std::string& name) {
  ObjectiveSpec spec;
  spec.name = name;
  return registries().diffusion_objectives.create(name, spec);
}

std::unique_ptr<Sampler> sampler(const std::string& name, int64_t steps, const Objective& obj) {
  SamplerSpec spec;
  spec.name = name;
  spec.steps = steps;
  spec.objective = &obj;
  return registries().diffusion_samplers.create(name, spec);
}

// E[eps | x_t] for x_0 ~ N(mu, s^2) under the objective's discrete schedule; the model time t maps back to a step.
DenoiseFn exact_noise_prediction(const Objective& obj, bool with_variance) {
  return [&obj, with_variance](const Tensor& x, const Tensor& t) {
    const auto& ab = obj.gaussian_schedule()->alphas_cumprod();
    const int64_t step = static_cast<int64_t>(std::llround(t.to_vector<double>()[0] - obj.time_offset()));
    const double a = ab.at(static_cast<size_t>(step));
    const Tensor eps = ops::mul(ops::sub(x, std::sqrt(a) * kMu), std::sqrt(1 - a) / (a * kS * kS + 1 - a));
    return with_variance ? ops::concat({eps, zeros_like(eps)}, 3) : eps;
  };
}

// E[x_1 - eps | x_t] on the linear path x_t = t x_1 + (1 - t) eps.
DenoiseFn exact_velocity() {
  return [](const Tensor& x, const Tensor& t_tensor) {
    const double t = t_tensor.to_vector<double>()[0];
    const double var = t * t * kS * kS + (1 - t) * (1 - t);
    return ops::add(ops::mul(ops::sub(x, t * kMu), (t * kS * kS - (1 - t)) / var), kMu);
  };
}

Tensor noise(int64_t n, uint64_t seed) { return dcae::testing::random_tensor({n, 4, 4, 2}, seed, DType::f32); }

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(x[i]) - y[i]));
  return worst;
}

std::pair<double, double> moments(const Tensor& t) {
  const std::vector<float> v = t.to_vector<float>();
  double m = 0, sq = 0;
  for (float x : v) m += x;
  m /= v.size();
  for (float x : v) sq += (x - m) * (x - m);
  return {m, std::sqrt(sq / v.size())};
}

TEST(DiffusionSampler, FlowOdeReachesTheExactTransportOfEachNoiseSample) {
  const auto obj = objective("flow-matching");
  const Tensor z = noise(64, 1);
  const Tensor exact = ops::add(ops::mul(z, kS), kMu);  // the flow maps z to mu + s z
  Generator gen(0);
  const double heun = max_abs_difference(sampler("heun", 50, *obj)->sample(exact_velocity(), z, gen), exact);
  const double euler = max_abs_difference(sampler("euler", 50, *obj)->sample(exact_velocity(), z, gen), exact);
  EXPECT_LT(heun, 2e-3);
  EXPECT_LT(euler, 0.1);
  EXPECT_LT(heun, euler / 5);  // second order
  EXPECT_EQ(sampler("heun", 50, *obj)->evaluations(), 100);
  // Adaptive dopri5 at the reference's tolerances (rtol 1e-3) lands within a few 1e-3 in fewer evaluations than
  // Heun's 100; tighter tolerances buy accuracy with more steps (the error control works).
  const auto dopri5 = sampler("dopri5", 0, *obj);
  const double adaptive = max_abs_difference(dopri5->sample(exact_velocity(), z, gen), exact);
  EXPECT_LT(adaptive, 5e-3);
  EXPECT_GT(dopri5->evaluations(), 6);
  EXPECT_LT(dopri5->evaluations(), 100);
  const auto tight = make_dopri5_flow_sampler(1e-7, 1e-9);
  const double tight_error = max_abs_difference(tight->sample(exact_velocity(), z, gen), exact);
  EXPECT_LT(tight_error, 1e-5);
  EXPECT_GT(tight->evaluations(), dopri5->evaluations());
  std::cout << "dopri5: rtol 1e-3 error " << adaptive << " in " << dopri5->evaluations() << " evaluations; rtol 1e-7 "
            << tight_error << " in " << tight->evaluations() << std::endl;
}

TEST(DiffusionSampler, DpmSolverPlusPlusFollowsTheProbabilityFlow) {
  for (const std::string name : {"uvit-ddpm", "ddpm"}) {
    const auto obj = objective(name);
    const auto& ab = obj->gaussian_schedule()->alphas_cumprod();
    const Tensor z = noise(64, 2);
    // Sampling starts from standard-normal noise taken as x at t = 1; the probability flow keeps its quantile
    // under x_t ~ N(sqrt(ab_t) mu, ab_t s^2 + 1 - ab_t) down to t = 1 / T.
    const double a_end = ab.front(), a_start = ab.back();
    const Tensor quantile = ops::div(ops::sub(z, std::sqrt(a_start) * kMu), std::sqrt(a_start * kS * kS + 1 - a_start));
    const Tensor exact = ops::add(ops::mul(quantile, std::sqrt(a_end * kS * kS + 1 - a_end)), std::sqrt(a_end) * kMu);
    Generator gen(0);
    const auto error = [&](const std::string& sampler_name, int64_t steps) {
      return max_abs_difference(sampler(sampler_name, steps, *obj)->sample(exact_noise_prediction(*obj, false), z, gen), exact);
    };
    // Multistep 2M, log-SNR steps. Measured at 30 steps: 0.0076 (uvit-ddpm) / 0.016 (ddpm) at worst over 2048
    // values; second order: doubling the steps cuts the error about 4x.
    const double multistep30 = error("dpm-solver++-2m", 30);
    EXPECT_LT(multistep30, 2e-2) << name;
    EXPECT_LT(error("dpm-solver++-2m", 60), 0.35 * multistep30) << name;
    // The reference's singlestep fast variant (order 3 on a time-uniform grid). Its last, first-order step spans the
    // largest log-SNR change (t from about 1/30 to 1/T), so at 30 steps it is coarser than 2M: measured 0.082
    // (uvit-ddpm) / 0.057 (ddpm) at 30 steps, 0.035 / 0.014 at 60, 5.6e-4 / 8.7e-5 at 999 (grid on the steps).
    const double fast30 = error("dpm-solver++", 30), fast60 = error("dpm-solver++", 60);
    EXPECT_LT(fast30, 0.1) << name;
    EXPECT_LT(fast60, 0.5 * fast30) << name;
    EXPECT_LT(error("dpm-solver++", 999), 1e-3) << name;
    for (int64_t steps : {1, 2, 4, 5}) EXPECT_TRUE(std::isfinite(error("dpm-solver++", steps))) << steps;
  }
}

TEST(DiffusionSampler, AncestralDdpmReproducesTheDataDistribution) {
  const auto obj = objective("ddpm");
  const Tensor z = noise(512, 3);  // 16384 values
  for (bool learned : {false, true}) {
    Generator gen(4);
    const auto s = sampler("ddpm", 250, *obj);
    EXPECT_EQ(s->evaluations(), 250);
    const auto [mean, std] = moments(s->sample(exact_noise_prediction(*obj, learned), z, gen));
    EXPECT_NEAR(mean, kMu, 0.03) << learned;
    EXPECT_NEAR(std, kS, 0.03) << learned;
  }
  // Without noise between steps the chain would collapse: the sampler must be stochastic.
  Generator a(1), b(2);
  const auto s = sampler("ddpm", 50, *obj);
  EXPECT_GT(max_abs_difference(s->sample(exact_noise_prediction(*obj, false), z, a),
                               s->sample(exact_noise_prediction(*obj, false), z, b)),
            0.1);
}

TEST(DiffusionSampler, SamplersRefuseTheWrongObjective) {
  dcae::testing::expect_error([] { sampler("ddpm", 10, *objective("flow-matching")); },
                              {"diffusion.sampler = \"ddpm\"", "flow-matching"});
  dcae::testing::expect_error([] { sampler("heun", 10, *objective("ddpm")); },
                              {"diffusion.sampler = \"heun\"", "not flow matching"});
}

TEST(DiffusionGuidance, CombinesConditionalAndUnconditionalInOneBatch) {
  // A network whose output depends on the label: channel c of sample i is x + 10 * label + c.
  std::vector<int64_t> batch_sizes;
  std::vector<std::vector<int64_t>> seen_labels;
  const LabelledNet net = [&](const Tensor& x, const Tensor& t, const Tensor& labels) {
    batch_sizes.push_back(x.size(0));
    seen_labels.push_back(labels.to_vector<int64_t>());
    EXPECT_EQ(t.size(0), x.size(0));
    std::vector<double> per_label;
    for (int64_t l : labels.to_vector<int64_t>()) per_label.push_back(10.0 * l);
    const Tensor offset = from_doubles(per_label, {x.size(0), 1, 1, 1});
    const Tensor channel = from_doubles({0, 1, 2, 3}, {1, 1, 1, 4});
    return ops::add(ops::add(ops::concat({x, x}, 3), offset), channel);  // 2 * C = 4 channels
  };
  const Tensor x = dcae::testing::random_tensor({3, 2, 2, 2}, 5, DType::f32);
  const Tensor t = full({3}, 7.0);
  const Tensor labels = from_vector(std::vector<int64_t>{1, 2, 3}, {3});
  const double scale = 1.5;
  const Tensor out = guided_denoiser(net, labels, 9, scale, 2)(x, t);
  ASSERT_EQ(batch_sizes, std::vector<int64_t>{6});
  EXPECT_EQ(seen_labels[0], (std::vector<int64_t>{1, 2, 3, 9, 9, 9}));
  const std::vector<float> got = out.to_vector<float>(), xv = x.to_vector<float>();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t p = 0; p < 4; ++p)
      for (int64_t c = 0; c < 4; ++c) {
        const double base = xv[(i * 4 + p) * 2 + c % 2] + c;
        const double cond = base + 10.0 * (i + 1), uncond = base + 90.0;
        const double expected = c < 2 ? uncond + scale * (cond - uncond) : cond;  // variance channels: conditional
        ASSERT_NEAR(got[(i * 4 + p) * 4 + c], expected, 1e-4) << i << " " << p << " " << c;
      }
  // Scale 1 is one plain conditional call.
  batch_sizes.clear();
  EXPECT_TRUE(dcae::testing::all_close(guided_denoiser(net, labels, 9, 1.0, 2)(x, t), net(x, t, labels), 0, 0));
  EXPECT_EQ(batch_sizes.front(), 3);
}

}  // namespace
}  // namespace dcae::trainer::diffusion
