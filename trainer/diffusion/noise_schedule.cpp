#include "trainer/diffusion/noise_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/tensor/error.h"

namespace dcae::trainer::diffusion {

std::vector<double> make_betas(const std::string& kind, int64_t steps) {
  DCAE_CHECK(steps >= 2, "diffusion schedule: need at least 2 steps, got ", steps);
  std::vector<double> betas(static_cast<size_t>(steps));
  const auto linspace = [&](double a, double b, int64_t i) { return a + (b - a) * static_cast<double>(i) / (steps - 1); };
  if (kind == "linear") {
    const double scale = 1000.0 / static_cast<double>(steps);
    for (int64_t i = 0; i < steps; ++i) betas[i] = linspace(scale * 1e-4, scale * 0.02, i);
  } else if (kind == "scaled_linear") {
    for (int64_t i = 0; i < steps; ++i) betas[i] = std::pow(linspace(std::sqrt(0.00085), std::sqrt(0.012), i), 2.0);
  } else {
    DCAE_FAIL("diffusion beta schedule '", kind, "': expected linear or scaled_linear");
  }
  return betas;
}

GaussianSchedule::GaussianSchedule(std::vector<double> betas) : betas_(std::move(betas)) {
  const size_t n = betas_.size();
  DCAE_CHECK(n >= 2, "diffusion schedule: need at least 2 steps, got ", n);
  alphas_cumprod_.resize(n);
  double product = 1.0;
  for (size_t i = 0; i < n; ++i) {
    DCAE_CHECK(betas_[i] > 0.0 && betas_[i] <= 1.0, "diffusion schedule: beta[", i, "] = ", betas_[i],
               " is outside (0, 1]");
    product *= 1.0 - betas_[i];
    alphas_cumprod_[i] = product;
  }
  posterior_variance_.resize(n);
  posterior_log_variance_clipped_.resize(n);
  posterior_mean_coef_x0_.resize(n);
  posterior_mean_coef_xt_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double prev = i == 0 ? 1.0 : alphas_cumprod_[i - 1];
    posterior_variance_[i] = betas_[i] * (1.0 - prev) / (1.0 - alphas_cumprod_[i]);
    posterior_mean_coef_x0_[i] = betas_[i] * std::sqrt(prev) / (1.0 - alphas_cumprod_[i]);
    posterior_mean_coef_xt_[i] = (1.0 - prev) * std::sqrt(1.0 - betas_[i]) / (1.0 - alphas_cumprod_[i]);
  }
  // The t = 0 posterior variance is 0; its log takes the t = 1 value (improved DDPM).
  for (size_t i = 0; i < n; ++i)
    posterior_log_variance_clipped_[i] = std::log(i == 0 ? posterior_variance_[1] : posterior_variance_[i]);
}

GaussianSchedule GaussianSchedule::respaced(const std::vector<int64_t>& kept) const {
  DCAE_CHECK(kept.size() >= 2, "diffusion respacing: keep at least 2 steps, got ", kept.size());
  std::vector<double> betas;
  double last = 1.0;
  int64_t previous = -1;
  for (int64_t index : kept) {
    DCAE_CHECK(index > previous && index < steps(), "diffusion respacing: steps must ascend within [0, ", steps(),
               "), got ", index, " after ", previous);
    betas.push_back(1.0 - alphas_cumprod_[index] / last);
    last = alphas_cumprod_[index];
    previous = index;
  }
  return GaussianSchedule(std::move(betas));
}

std::vector<int64_t> evenly_spaced_steps(int64_t total, int64_t kept) {
  DCAE_CHECK(kept >= 2 && kept <= total, "diffusion sampling steps ", kept, " must be in [2, ", total, "]");
  std::vector<int64_t> out;
  const double stride = static_cast<double>(total - 1) / static_cast<double>(kept - 1);
  for (int64_t i = 0; i < kept; ++i) out.push_back(static_cast<int64_t>(std::llround(i * stride)));
  return out;
}

Tensor per_sample(const std::vector<double>& values, const std::vector<int64_t>& index, DType dtype, Device device) {
  std::vector<double> picked;
  picked.reserve(index.size());
  for (int64_t i : index) {
    DCAE_CHECK(i >= 0 && i < static_cast<int64_t>(values.size()), "diffusion: timestep index ", i,
               " outside [0, ", values.size(), ")");
    picked.push_back(values[static_cast<size_t>(i)]);
  }
  return from_doubles(picked, {static_cast<int64_t>(index.size()), 1, 1, 1}, dtype, device);
}

Tensor per_sample_constant(double value, int64_t n, DType dtype, Device device) {
  return from_doubles(std::vector<double>(static_cast<size_t>(n), value), {n, 1, 1, 1}, dtype, device);
}

namespace {
// Piecewise-linear interpolation through (xs, ys) with xs ascending; linear extrapolation beyond the ends.
double interpolate(double x, const std::vector<double>& xs, const std::vector<double>& ys) {
  size_t hi = static_cast<size_t>(std::upper_bound(xs.begin(), xs.end(), x) - xs.begin());
  hi = std::clamp<size_t>(hi, 1, xs.size() - 1);
  const size_t lo = hi - 1;
  return ys[lo] + (ys[hi] - ys[lo]) * (x - xs[lo]) / (xs[hi] - xs[lo]);
}
}  // namespace

ContinuousVpSchedule::ContinuousVpSchedule(const GaussianSchedule& discrete) {
  const int64_t n = discrete.steps();
  for (int64_t i = 0; i < n; ++i) {
    t_.push_back(static_cast<double>(i + 1) / static_cast<double>(n));
    log_alpha_.push_back(0.5 * std::log(discrete.alphas_cumprod()[i]));
  }
}

double ContinuousVpSchedule::log_alpha(double t) const { return interpolate(t, t_, log_alpha_); }
double ContinuousVpSchedule::alpha(double t) const { return std::exp(log_alpha(t)); }
double ContinuousVpSchedule::sigma(double t) const { return std::sqrt(-std::expm1(2.0 * log_alpha(t))); }
double ContinuousVpSchedule::lambda(double t) const {
  const double la = log_alpha(t);
  return la - 0.5 * std::log(-std::expm1(2.0 * la));
}

double ContinuousVpSchedule::inverse_lambda(double lambda) const {
  // log alpha = -0.5 * log(1 + exp(-2 lambda)); log alpha decreases with t, so interpolate on the reversed tables.
  const double la = -0.5 * (std::max(0.0, -2.0 * lambda) + std::log1p(std::exp(-std::abs(2.0 * lambda))));
  std::vector<double> xs(log_alpha_.rbegin(), log_alpha_.rend()), ys(t_.rbegin(), t_.rend());
  return interpolate(la, xs, ys);
}

}  // namespace dcae::trainer::diffusion
