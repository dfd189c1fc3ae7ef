// The diffusion objectives against plain formulas: schedules, q(x_t | x_0), the DDPM posterior (by Bayes' rule),
// the noise / velocity losses, improved DDPM's VLB term element by element, what the network is given, and the
// label dropout of classifier-free guidance.
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd/engine.h"
#include "tests/testing/check.h"
#include "trainer/diffusion/diffusion_job.h"
#include "trainer/diffusion/objective.h"
#include "trainer/registries.h"

namespace dcae::trainer::diffusion {
namespace {

using dcae::testing::all_close;
using dcae::testing::random_tensor;

std::unique_ptr<Objective> objective(const std::string& name) {
  ObjectiveSpec spec;
  spec.name = name;
  return registries().diffusion_objectives.create(name, spec);
}

TEST(DiffusionSchedule, BetasMatchTheirDefinitions) {
  const std::vector<double> linear = make_betas("linear", 1000);
  EXPECT_DOUBLE_EQ(linear.front(), 1e-4);
  EXPECT_NEAR(linear.back(), 0.02, 1e-15);
  EXPECT_NEAR(linear[500], 1e-4 + (0.02 - 1e-4) * 500.0 / 999.0, 1e-15);
  const std::vector<double> scaled = make_betas("scaled_linear", 1000);
  EXPECT_NEAR(scaled.front(), 0.00085, 1e-15);
  EXPECT_NEAR(scaled.back(), 0.012, 1e-15);
  EXPECT_NEAR(std::sqrt(scaled[300]), std::sqrt(0.00085) + (std::sqrt(0.012) - std::sqrt(0.00085)) * 300.0 / 999.0, 1e-15);
  dcae::testing::expect_error([] { make_betas("cosine", 1000); }, {"cosine", "linear or scaled_linear"});
}

TEST(DiffusionSchedule, PosteriorMatchesBayesRule) {
  const GaussianSchedule s(make_betas("linear", 1000));
  double product = 1.0;
  for (int64_t i = 0; i < 1000; ++i) {
    product *= 1.0 - s.betas()[i];
    ASSERT_NEAR(s.alphas_cumprod()[i], product, 1e-12);
  }
  // q(x_{t-1} | x_t, x_0) from q(x_{t-1} | x_0) = N(sqrt(abar') x_0, 1 - abar') and q(x_t | x_{t-1}) =
  // N(sqrt(alpha) x_{t-1}, beta): precision adds, the mean is the precision-weighted sum.
  for (int64_t i : {1, 7, 250, 999}) {
    const double prev = s.alphas_cumprod()[i - 1], beta = s.betas()[i], alpha = 1.0 - beta;
    const double precision = 1.0 / (1.0 - prev) + alpha / beta;
    const double var = 1.0 / precision;
    EXPECT_NEAR(s.posterior_variance()[i], var, 1e-12 * var + 1e-18) << i;
    EXPECT_NEAR(s.posterior_mean_coef_x0()[i], var * std::sqrt(prev) / (1.0 - prev), 1e-10) << i;
    EXPECT_NEAR(s.posterior_mean_coef_xt()[i], var * std::sqrt(alpha) / beta, 1e-10) << i;
    EXPECT_NEAR(s.posterior_log_variance_clipped()[i], std::log(var), 1e-10) << i;
  }
  EXPECT_DOUBLE_EQ(s.posterior_variance()[0], 0.0);
  EXPECT_DOUBLE_EQ(s.posterior_log_variance_clipped()[0], std::log(s.posterior_variance()[1]));
}

TEST(DiffusionSchedule, RespacingKeepsTheCumulativeProducts) {
  const GaussianSchedule s(make_betas("linear", 1000));
  const std::vector<int64_t> kept = evenly_spaced_steps(1000, 250);
  ASSERT_EQ(kept.size(), 250u);
  EXPECT_EQ(kept.front(), 0);
  EXPECT_EQ(kept.back(), 999);
  EXPECT_EQ(kept[1], 4);  // round(999 / 249)
  const GaussianSchedule r = s.respaced(kept);
  for (size_t k = 0; k < kept.size(); ++k) ASSERT_NEAR(r.alphas_cumprod()[k], s.alphas_cumprod()[kept[k]], 1e-12);
}

TEST(DiffusionSchedule, ContinuousViewInterpolatesLogAlphaAndInvertsLambda) {
  const GaussianSchedule s(make_betas("scaled_linear", 1000));
  const ContinuousVpSchedule vp(s);
  EXPECT_NEAR(vp.log_alpha(1.0), 0.5 * std::log(s.alphas_cumprod()[999]), 1e-12);
  EXPECT_NEAR(vp.log_alpha(0.001), 0.5 * std::log(s.alphas_cumprod()[0]), 1e-12);
  const double mid = 0.5 * (0.5 * std::log(s.alphas_cumprod()[499]) + 0.5 * std::log(s.alphas_cumprod()[500]));
  EXPECT_NEAR(vp.log_alpha(0.5005), mid, 1e-12);
  for (double t : {0.001, 0.02, 0.3, 0.77, 1.0}) {
    EXPECT_NEAR(vp.alpha(t) * vp.alpha(t) + vp.sigma(t) * vp.sigma(t), 1.0, 1e-12);
    EXPECT_NEAR(vp.inverse_lambda(vp.lambda(t)), t, 1e-9) << t;
  }
}

// A fixed draw: steps, model times and noise.
ObjectiveDraw fixed_draw(const std::vector<int64_t>& index, double offset, const Tensor& noise) {
  ObjectiveDraw d;
  d.index = index;
  for (int64_t i : index) d.t.push_back(static_cast<double>(i) + offset);
  d.noise = noise;
  return d;
}

TEST(DiffusionObjective, DdpmNoisedIsTheClosedFormAndTheLossIsNoiseMse) {
  for (const auto& [name, offset] : std::vector<std::pair<std::string, double>>{{"ddpm", 0.0}, {"uvit-ddpm", 1.0}}) {
    const auto obj = objective(name);
    const Tensor x0 = random_tensor({3, 2, 2, 4}, 1, DType::f32);
    const Tensor noise = random_tensor({3, 2, 2, 4}, 2, DType::f32);
    const Tensor pred = random_tensor({3, 2, 2, 4}, 3, DType::f32);
    const ObjectiveDraw d = fixed_draw({0, 411, 999}, offset, noise);
    const auto& ab = obj->gaussian_schedule()->alphas_cumprod();
    const std::vector<float> xv = x0.to_vector<float>(), nv = noise.to_vector<float>(), pv = pred.to_vector<float>();
    const std::vector<float> xt = obj->noised(x0, d).to_vector<float>();
    double mse = 0.0;
    for (size_t e = 0; e < xv.size(); ++e) {
      const double a = ab[d.index[e / 16]];
      ASSERT_NEAR(xt[e], std::sqrt(a) * xv[e] + std::sqrt(1.0 - a) * nv[e], 1e-5) << name << " " << e;
      mse += (nv[e] - pv[e]) * (nv[e] - pv[e]) / static_cast<double>(xv.size());
    }
    std::vector<double> seen_t;
    const ObjectiveLoss loss = obj->loss(
        [&](const Tensor& x_t, const Tensor& t) {
          EXPECT_TRUE(all_close(x_t, obj->noised(x0, d), 0, 0));
          seen_t = t.to_vector<double>();
          return pred;
        },
        x0, d);
    EXPECT_NEAR(loss.loss.item<double>(), mse, 1e-5) << name;
    EXPECT_EQ(seen_t, (std::vector<double>{0 + offset, 411 + offset, 999 + offset})) << name;
    ASSERT_EQ(loss.terms.size(), 1u);
    EXPECT_EQ(loss.terms[0].first, "mse");
  }
}

// Improved DDPM's formulas written out per element in double.
double kl(double m1, double lv1, double m2, double lv2) {
  return 0.5 * (-1.0 + lv2 - lv1 + std::exp(lv1 - lv2) + (m1 - m2) * (m1 - m2) * std::exp(-lv2));
}
double cdf(double x) { return 0.5 * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }
double discretized_log_likelihood(double x, double mean, double log_scale) {
  const double inv = std::exp(-log_scale), c = x - mean;
  const double plus = cdf(inv * (c + 1.0 / 255)), minus = cdf(inv * (c - 1.0 / 255));
  if (x < -0.999) return std::log(std::max(plus, 1e-12));
  if (x > 0.999) return std::log(std::max(1.0 - minus, 1e-12));
  return std::log(std::max(plus - minus, 1e-12));
}

TEST(DiffusionObjective, HybridLossAddsTheVlbWithTheMeanFrozen) {
  const auto obj = objective("ddpm");
  const GaussianSchedule& s = *obj->gaussian_schedule();
  const int64_t n = 4, h = 2, w = 2, c = 3, per = h * w * c;
  Tensor x0 = random_tensor({n, h, w, c}, 11, DType::f32, 0.6);
  x0.data<float>()[0] = -1.2f;  // the decoder NLL's open-ended edge bins
  x0.data<float>()[1] = 1.5f;
  const Tensor noise = random_tensor({n, h, w, c}, 12, DType::f32);
  Tensor out = random_tensor({n, h, w, 2 * c}, 13, DType::f32, 0.5);
  out.set_requires_grad(true);
  const ObjectiveDraw d = fixed_draw({0, 1, 500, 999}, 0.0, noise);
  const ObjectiveLoss loss = obj->loss([&](const Tensor&, const Tensor&) { return out; }, x0, d);

  const std::vector<float> xv = x0.to_vector<float>(), nv = noise.to_vector<float>(), ov = out.to_vector<float>();
  const std::vector<float> xt = obj->noised(x0, d).to_vector<float>();
  double mse = 0.0, vb = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = d.index[i];
    const double ab = s.alphas_cumprod()[k], min_log = s.posterior_log_variance_clipped()[k];
    const double max_log = std::log(s.betas()[k]);
    double sample_vb = 0.0;
    for (int64_t e = 0; e < per; ++e) {
      const int64_t pixel = e / c, ch = e % c;
      const size_t at = static_cast<size_t>(i * per + e), o = static_cast<size_t>((i * h * w + pixel) * 2 * c);
      const double eps = ov[o + ch], v = ov[o + c + ch];
      mse += (nv[at] - eps) * (nv[at] - eps);
      const double log_var = (v + 1) / 2 * max_log + (1 - (v + 1) / 2) * min_log;
      const double pred_x0 = std::sqrt(1 / ab) * xt[at] - std::sqrt(1 / ab - 1) * eps;
      const double mean = s.posterior_mean_coef_x0()[k] * pred_x0 + s.posterior_mean_coef_xt()[k] * xt[at];
      const double true_mean = s.posterior_mean_coef_x0()[k] * xv[at] + s.posterior_mean_coef_xt()[k] * xt[at];
      sample_vb += k == 0 ? -discretized_log_likelihood(xv[at], mean, 0.5 * log_var) : kl(true_mean, min_log, mean, log_var);
    }
    vb += sample_vb / per / std::log(2.0) / n;
  }
  mse /= n * per;
  ASSERT_EQ(loss.terms.size(), 2u);
  EXPECT_NEAR(loss.terms[0].second.item<double>(), mse, 1e-5);
  EXPECT_EQ(loss.terms[1].first, "vb");
  EXPECT_NEAR(loss.terms[1].second.item<double>(), vb, 1e-4 * std::abs(vb) + 1e-6);
  EXPECT_NEAR(loss.loss.item<double>(), mse + vb, 1e-4 * std::abs(vb) + 1e-5);

  // The VLB reaches only the variance channels: the noise channels' gradient is the MSE's alone.
  autograd::backward(loss.loss);
  const std::vector<float> grad = out.grad().to_vector<float>();
  for (int64_t i = 0; i < n * h * w; ++i)
    for (int64_t ch = 0; ch < c; ++ch) {
      const size_t at = static_cast<size_t>(i * c + ch), o = static_cast<size_t>(i * 2 * c + ch);
      ASSERT_NEAR(grad[o], 2.0 * (ov[o] - nv[at]) / (n * per), 1e-6) << i << " " << ch;
    }
  bool variance_gradient = false;
  for (int64_t i = 0; i < n * h * w; ++i) variance_gradient |= grad[i * 2 * c + c] != 0.0f;
  EXPECT_TRUE(variance_gradient);
}

TEST(DiffusionObjective, FlowMatchingIsTheLinearPathWithVelocityTarget) {
  const auto obj = objective("flow-matching");
  EXPECT_EQ(obj->gaussian_schedule(), nullptr);
  const Tensor x1 = random_tensor({2, 3, 3, 2}, 21, DType::f32);
  const Tensor noise = random_tensor({2, 3, 3, 2}, 22, DType::f32);
  const Tensor pred = random_tensor({2, 3, 3, 2}, 23, DType::f32);
  ObjectiveDraw d;
  d.t = {0.25, 0.9};
  d.noise = noise;
  const std::vector<float> xv = x1.to_vector<float>(), nv = noise.to_vector<float>(), pv = pred.to_vector<float>();
  const std::vector<float> xt = obj->noised(x1, d).to_vector<float>();
  double mse = 0.0;
  for (size_t e = 0; e < xv.size(); ++e) {
    const double t = d.t[e / 18];
    ASSERT_NEAR(xt[e], t * xv[e] + (1 - t) * nv[e], 1e-6);
    const double target = xv[e] - nv[e];
    mse += (pv[e] - target) * (pv[e] - target) / static_cast<double>(xv.size());
  }
  std::vector<double> seen_t;
  const ObjectiveLoss loss = obj->loss([&](const Tensor&, const Tensor& t) { seen_t = t.to_vector<double>(); return pred; },
                                       x1, d);
  EXPECT_NEAR(loss.loss.item<double>(), mse, 1e-5);
  ASSERT_EQ(seen_t.size(), 2u);
  EXPECT_NEAR(seen_t[0], 0.25, 1e-7);  // the model time is f32
  EXPECT_NEAR(seen_t[1], 0.9, 1e-7);
  dcae::testing::expect_error(
      [&] { obj->loss([&](const Tensor&, const Tensor&) { return random_tensor({2, 3, 3, 4}, 1, DType::f32); }, x1, d); },
      {"flow-matching", "no variance channels"});
}

TEST(DiffusionObjective, DrawsCoverEachObjectivesTimeRange) {
  const Tensor x0 = zeros({4000, 1, 1, 1});
  Generator gen(5);
  const ObjectiveDraw ddpm = objective("ddpm")->draw(x0, gen);
  const ObjectiveDraw uvit = objective("uvit-ddpm")->draw(x0, gen);
  const ObjectiveDraw flow = objective("flow-matching")->draw(x0, gen);
  auto range = [](const std::vector<double>& v) { return std::minmax_element(v.begin(), v.end()); };
  EXPECT_EQ(*range(ddpm.t).first, 0.0);
  EXPECT_EQ(*range(ddpm.t).second, 999.0);
  EXPECT_EQ(*range(uvit.t).first, 1.0);
  EXPECT_EQ(*range(uvit.t).second, 1000.0);
  EXPECT_GE(*range(flow.t).first, 0.0);
  EXPECT_LT(*range(flow.t).second, 1.0);
  double mean = 0.0;
  for (double t : ddpm.t) mean += t / 4000.0;
  EXPECT_NEAR(mean, 499.5, 15.0);
  const std::vector<float> noise = ddpm.noise.to_vector<float>();
  double m = 0, sq = 0;
  for (float v : noise) m += v / 4000.0, sq += v * v / 4000.0;
  EXPECT_NEAR(m, 0.0, 0.06);
  EXPECT_NEAR(sq, 1.0, 0.08);
}

TEST(DiffusionObjective, LabelDropoutReplacesAboutTheRateWithTheNullClass) {
  std::vector<int64_t> labels(20000);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(i % 1000);
  Generator gen(9);
  const std::vector<int64_t> out =
      drop_labels(from_vector(labels, {20000}), 0.1, 1000, gen).to_vector<int64_t>();
  int64_t dropped = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (out[i] == 1000) ++dropped;
    else ASSERT_EQ(out[i], labels[i]);
  }
  EXPECT_NEAR(static_cast<double>(dropped) / 20000.0, 0.1, 0.008);
  Generator none(9);
  EXPECT_EQ(drop_labels(from_vector(labels, {20000}), 0.0, 1000, none).to_vector<int64_t>(), labels);
}

}  // namespace
}  // namespace dcae::trainer::diffusion
