#include "trainer/diffusion/objective.h"

#include <cmath>
#include <sstream>

#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::trainer::diffusion {

namespace {

constexpr double kLn2 = 0.69314718055994530942;

// Uniform [0, 1) draws for n samples, as host doubles.
std::vector<double> uniform_draws(int64_t n, Generator& gen) {
  std::vector<double> out;
  for (float u : rand({n}, gen, DType::f32).to_vector<float>()) out.push_back(u);
  return out;
}

Tensor standard_normal_like(const Tensor& x, Generator& gen) {
  Tensor noise = empty(x.shape(), DType::f32, x.device());
  normal_(noise, 0.0, 1.0, gen);
  return noise;
}

void check_latents(const Tensor& x0, const ObjectiveDraw& draw, bool discrete) {
  DCAE_CHECK(x0.dim() == 4 && x0.dtype() == DType::f32, "diffusion objective: x_0 must be f32 NHWC latents, got ",
             x0.str());
  DCAE_CHECK(draw.noise.defined() && draw.noise.shape() == x0.shape(), "diffusion objective: noise ",
             draw.noise.defined() ? draw.noise.str() : std::string("(none)"), " does not match x_0 ", x0.str());
  DCAE_CHECK(static_cast<int64_t>(draw.t.size()) == x0.size(0), "diffusion objective: ", draw.t.size(),
             " timesteps for a batch of ", x0.size(0));
  DCAE_CHECK(!discrete || draw.index.size() == draw.t.size(), "diffusion objective: ", draw.index.size(),
             " step indices for ", draw.t.size(), " timesteps");
}

Tensor mean_per_sample(const Tensor& x) { return ops::mean(x, {1, 2, 3}); }

class DdpmObjective : public Objective {
 public:
  DdpmObjective(std::string name, std::vector<double> betas, double time_offset)
      : name_(std::move(name)), schedule_(std::move(betas)), time_offset_(time_offset) {
    for (double ab : schedule_.alphas_cumprod()) {
      sqrt_ab_.push_back(std::sqrt(ab));
      sqrt_one_minus_ab_.push_back(std::sqrt(1.0 - ab));
      sqrt_recip_ab_.push_back(std::sqrt(1.0 / ab));
      sqrt_recipm1_ab_.push_back(std::sqrt(1.0 / ab - 1.0));
    }
    for (double b : schedule_.betas()) log_betas_.push_back(std::log(b));
  }

  std::string name() const override { return name_; }
  std::string summary() const override {
    std::ostringstream out;
    out << name_ << ": " << schedule_.steps() << " steps, betas " << schedule_.betas().front() << ".."
        << schedule_.betas().back() << ", model time = step + " << time_offset_
        << ", noise prediction (hybrid mse + vb when the network predicts a variance)";
    return out.str();
  }
  const GaussianSchedule* gaussian_schedule() const override { return &schedule_; }
  double time_offset() const override { return time_offset_; }

  ObjectiveDraw draw(const Tensor& x0, Generator& gen) const override {
    ObjectiveDraw d;
    const int64_t steps = schedule_.steps();
    for (double u : uniform_draws(x0.size(0), gen)) {
      const int64_t i = std::min<int64_t>(static_cast<int64_t>(u * static_cast<double>(steps)), steps - 1);
      d.index.push_back(i);
      d.t.push_back(static_cast<double>(i) + time_offset_);
    }
    d.noise = standard_normal_like(x0, gen);
    return d;
  }

  Tensor noised(const Tensor& x0, const ObjectiveDraw& d) const override {
    check_latents(x0, d, true);
    return ops::add(ops::mul(x0, coef(sqrt_ab_, d, x0)), ops::mul(d.noise, coef(sqrt_one_minus_ab_, d, x0)));
  }

  ObjectiveLoss loss(const DenoiseFn& model, const Tensor& x0, const ObjectiveDraw& d) const override {
    const Tensor x_t = noised(x0, d);
    const int64_t n = x0.size(0), c = x0.size(3);
    const Tensor out = model(x_t, from_doubles(d.t, {n}, DType::f32, x0.device()));
    DCAE_CHECK(out.dim() == 4 && out.size(0) == n && out.size(1) == x0.size(1) && out.size(2) == x0.size(2) &&
                   (out.size(3) == c || out.size(3) == 2 * c),
               "objective ", name_, ": the denoiser returned ", out.str(), " for latents ", x0.str(),
               "; expected ", c, " channels (noise) or ", 2 * c, " (noise and variance)");
    ObjectiveLoss result;
    const Tensor eps = out.size(3) == c ? out : ops::narrow(out, 3, 0, c);
    const Tensor mse = ops::mean(ops::square(ops::sub(d.noise, eps)));
    result.terms.emplace_back("mse", mse.detach());
    if (out.size(3) == c) {
      result.loss = mse;
      return result;
    }
    const Tensor vb = variational_bound(x0, x_t, eps.detach(), ops::narrow(out, 3, c, c), d);
    result.terms.emplace_back("vb", vb.detach());
    result.loss = ops::add(mse, vb);
    return result;
  }

 private:
  Tensor coef(const std::vector<double>& table, const ObjectiveDraw& d, const Tensor& like) const {
    return per_sample(table, d.index, DType::f32, like.device());
  }

  // The VLB term of improved DDPM with the mean frozen (eps detached): KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in
  // bits per dim, or the discretised decoder NLL at t = 0; scaled by T / 1000 (DiT's RESCALED_MSE).
  Tensor variational_bound(const Tensor& x0, const Tensor& x_t, const Tensor& eps, const Tensor& v,
                           const ObjectiveDraw& d) const {
    const Tensor min_log = coef(schedule_.posterior_log_variance_clipped(), d, x0);
    const Tensor max_log = coef(log_betas_, d, x0);
    const Tensor frac = ops::mul(ops::add(v, 1.0), 0.5);
    const Tensor model_log_var = ops::add(ops::mul(frac, max_log), ops::mul(ops::rsub(1.0, frac), min_log));
    const Tensor pred_x0 = ops::sub(ops::mul(x_t, coef(sqrt_recip_ab_, d, x0)), ops::mul(eps, coef(sqrt_recipm1_ab_, d, x0)));
    const Tensor c0 = coef(schedule_.posterior_mean_coef_x0(), d, x0);
    const Tensor ct = coef(schedule_.posterior_mean_coef_xt(), d, x0);
    const Tensor model_mean = ops::add(ops::mul(pred_x0, c0), ops::mul(x_t, ct));
    const Tensor true_mean = ops::add(ops::mul(x0, c0), ops::mul(x_t, ct));
    const Tensor kl = ops::div(mean_per_sample(normal_kl(true_mean, min_log, model_mean, model_log_var)), kLn2);
    const Tensor nll = ops::div(
        ops::neg(mean_per_sample(discretized_gaussian_log_likelihood(x0, model_mean, ops::mul(model_log_var, 0.5)))),
        kLn2);
    std::vector<double> at_zero;
    for (int64_t i : d.index) at_zero.push_back(i == 0 ? 1.0 : 0.0);
    const Tensor first = from_doubles(at_zero, {static_cast<int64_t>(at_zero.size())}, DType::f32, x0.device());
    const Tensor per_sample_vb = ops::add(ops::mul(first, nll), ops::mul(ops::rsub(1.0, first), kl));
    return ops::mul(ops::mean(per_sample_vb), static_cast<double>(schedule_.steps()) / 1000.0);
  }

  std::string name_;
  GaussianSchedule schedule_;
  double time_offset_;
  std::vector<double> sqrt_ab_, sqrt_one_minus_ab_, sqrt_recip_ab_, sqrt_recipm1_ab_, log_betas_;
};

class FlowMatchingObjective : public Objective {
 public:
  std::string name() const override { return "flow-matching"; }
  std::string summary() const override {
    return "flow-matching: linear path x_t = t x_1 + (1 - t) eps, t ~ U[0, 1] (0 noise, 1 data), velocity "
           "prediction x_1 - eps, mse";
  }
  ObjectiveDraw draw(const Tensor& x0, Generator& gen) const override {
    ObjectiveDraw d;
    d.t = uniform_draws(x0.size(0), gen);
    d.noise = standard_normal_like(x0, gen);
    return d;
  }
  Tensor noised(const Tensor& x1, const ObjectiveDraw& d) const override {
    check_latents(x1, d, false);
    std::vector<double> one_minus_t;
    for (double t : d.t) one_minus_t.push_back(1.0 - t);
    const Shape column = {x1.size(0), 1, 1, 1};
    return ops::add(ops::mul(x1, from_doubles(d.t, column, DType::f32, x1.device())),
                    ops::mul(d.noise, from_doubles(one_minus_t, column, DType::f32, x1.device())));
  }
  ObjectiveLoss loss(const DenoiseFn& model, const Tensor& x1, const ObjectiveDraw& d) const override {
    const Tensor x_t = noised(x1, d);
    const Tensor out = model(x_t, from_doubles(d.t, {x1.size(0)}, DType::f32, x1.device()));
    DCAE_CHECK(out.shape() == x1.shape(), "objective flow-matching: the denoiser returned ", out.str(),
               " for latents ", x1.str(), "; a velocity has the latents' shape (no variance channels)");
    ObjectiveLoss result;
    result.loss = ops::mean(ops::square(ops::sub(out, ops::sub(x1, d.noise))));
    result.terms.emplace_back("mse", result.loss.detach());
    return result;
  }
};

}  // namespace

std::unique_ptr<Objective> make_ddpm_objective(std::string name, std::vector<double> betas, double time_offset) {
  return std::make_unique<DdpmObjective>(std::move(name), std::move(betas), time_offset);
}

std::unique_ptr<Objective> make_flow_matching_objective() { return std::make_unique<FlowMatchingObjective>(); }

Tensor normal_kl(const Tensor& mean1, const Tensor& logvar1, const Tensor& mean2, const Tensor& logvar2) {
  // 0.5 * (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 * exp(-logvar2))
  const Tensor terms = ops::add(ops::add(ops::sub(logvar2, logvar1), ops::exp(ops::sub(logvar1, logvar2))),
                                ops::mul(ops::square(ops::sub(mean1, mean2)), ops::exp(ops::neg(logvar2))));
  return ops::mul(ops::sub(terms, 1.0), 0.5);
}

namespace {
// The standard normal CDF through the tanh approximation improved DDPM uses.
Tensor approx_standard_normal_cdf(const Tensor& x) {
  const double k = std::sqrt(2.0 / M_PI);
  const Tensor inner = ops::mul(ops::add(x, ops::mul(ops::pow(x, 3.0), 0.044715)), k);
  return ops::mul(ops::add(ops::tanh(inner), 1.0), 0.5);
}
}  // namespace

Tensor discretized_gaussian_log_likelihood(const Tensor& x, const Tensor& means, const Tensor& log_scales) {
  const Tensor centered = ops::sub(x, means);
  const Tensor inv_stdv = ops::exp(ops::neg(log_scales));
  const Tensor cdf_plus = approx_standard_normal_cdf(ops::mul(inv_stdv, ops::add(centered, 1.0 / 255.0)));
  const Tensor cdf_min = approx_standard_normal_cdf(ops::mul(inv_stdv, ops::sub(centered, 1.0 / 255.0)));
  const Tensor log_cdf_plus = ops::log(ops::clamp(cdf_plus, 1e-12, 1e30));
  const Tensor log_one_minus_cdf_min = ops::log(ops::clamp(ops::rsub(1.0, cdf_min), 1e-12, 1e30));
  const Tensor log_cdf_delta = ops::log(ops::clamp(ops::sub(cdf_plus, cdf_min), 1e-12, 1e30));
  // Edge bins: below -0.999 the whole lower tail, above 0.999 the whole upper tail.
  Tensor low, high;
  {
    autograd::NoGradGuard no_grad;
    low = ops::less(x, full({}, -0.999, x.dtype(), x.device()));
    high = ops::greater(x, full({}, 0.999, x.dtype(), x.device()));
  }
  const Tensor inner = ops::add(ops::mul(high, log_one_minus_cdf_min), ops::mul(ops::rsub(1.0, high), log_cdf_delta));
  return ops::add(ops::mul(low, log_cdf_plus), ops::mul(ops::rsub(1.0, low), inner));
}

}  // namespace dcae::trainer::diffusion
