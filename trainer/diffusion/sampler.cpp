#include "trainer/diffusion/sampler.h"

#include <cmath>
#include <sstream>

#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::trainer::diffusion {

namespace {

Tensor time_vector(double t, const Tensor& like) {
  return full({like.size(0)}, t, DType::f32, like.device());
}

// The noise prediction (first C channels) and, when present, the variance output (the next C).
std::pair<Tensor, Tensor> split_prediction(const Tensor& out, const Tensor& x, const char* sampler) {
  const int64_t c = x.size(3);
  DCAE_CHECK(out.dim() == 4 && out.size(0) == x.size(0) && (out.size(3) == c || out.size(3) == 2 * c), sampler,
             " sampler: the denoiser returned ", out.str(), " for ", x.str());
  if (out.size(3) == c) return {out, Tensor()};
  return {ops::narrow(out, 3, 0, c), ops::narrow(out, 3, c, c)};
}

class DdpmSampler : public Sampler {
 public:
  DdpmSampler(const GaussianSchedule& schedule, double time_offset, int64_t steps)
      : kept_(evenly_spaced_steps(schedule.steps(), steps)),
        schedule_(schedule.respaced(kept_)),
        base_steps_(schedule.steps()),
        time_offset_(time_offset) {}
  std::string summary() const override {
    std::ostringstream out;
    out << "ddpm ancestral, " << kept_.size() << " of " << base_steps_ << " steps";
    return out.str();
  }
  int64_t evaluations() const override { return static_cast<int64_t>(kept_.size()); }

  Tensor sample(const DenoiseFn& model, const Tensor& noise, Generator& gen) const override {
    autograd::NoGradGuard no_grad;
    Tensor x = noise;
    const auto& ab = schedule_.alphas_cumprod();
    for (int64_t k = static_cast<int64_t>(kept_.size()) - 1; k >= 0; --k) {
      const auto [eps, v] = split_prediction(model(x, time_vector(kept_[k] + time_offset_, x)), x, "ddpm");
      const double min_log = schedule_.posterior_log_variance_clipped()[k];
      Tensor log_var;
      if (v.defined()) {  // improved DDPM's learned range between the posterior variance and beta
        const Tensor frac = ops::mul(ops::add(v, 1.0), 0.5);
        log_var = ops::add(ops::mul(frac, std::log(schedule_.betas()[k])), ops::mul(ops::rsub(1.0, frac), min_log));
      } else {  // "fixed large": beta_t, with the posterior variance at t = 1 in place of beta_0
        log_var = full({}, std::log(k == 0 ? schedule_.posterior_variance()[1] : schedule_.betas()[k]), DType::f32,
                       x.device());
      }
      const Tensor pred_x0 = ops::sub(ops::mul(x, std::sqrt(1.0 / ab[k])), ops::mul(eps, std::sqrt(1.0 / ab[k] - 1.0)));
      const Tensor mean = ops::add(ops::mul(pred_x0, schedule_.posterior_mean_coef_x0()[k]),
                                   ops::mul(x, schedule_.posterior_mean_coef_xt()[k]));
      if (k == 0) {
        x = mean;
      } else {
        Tensor z = empty(x.shape(), DType::f32, x.device());
        normal_(z, 0.0, 1.0, gen);
        x = ops::add(mean, ops::mul(ops::exp(ops::mul(log_var, 0.5)), z));
      }
    }
    return x;
  }

 private:
  std::vector<int64_t> kept_;
  GaussianSchedule schedule_;
  int64_t base_steps_;
  double time_offset_;
};

// DPM-Solver++'s data prediction: x_0 from the network's noise prediction at continuous time t, where
// t = (i + 1) / T is step i and its model time i + time_offset.
Tensor predict_data(const DenoiseFn& model, const ContinuousVpSchedule& vp, double time_offset, const Tensor& x,
                    double t) {
  const double model_time = t * static_cast<double>(vp.total_steps()) - 1.0 + time_offset;
  const Tensor eps = split_prediction(model(x, time_vector(model_time, x)), x, "dpm-solver++").first;
  return ops::div(ops::sub(x, ops::mul(eps, vp.sigma(t))), vp.alpha(t));
}

class DpmSolverPlusPlus : public Sampler {
 public:
  DpmSolverPlusPlus(const GaussianSchedule& schedule, double time_offset, int64_t steps)
      : vp_(schedule), time_offset_(time_offset), steps_(steps) {
    DCAE_CHECK(steps >= 2, "dpm-solver++: need at least 2 steps, got ", steps);
    const double t_end = 1.0 / static_cast<double>(vp_.total_steps());
    const double lambda_start = vp_.lambda(1.0), lambda_end = vp_.lambda(t_end);
    for (int64_t i = 0; i <= steps; ++i)
      times_.push_back(vp_.inverse_lambda(lambda_start + (lambda_end - lambda_start) * i / static_cast<double>(steps)));
  }
  std::string summary() const override {
    std::ostringstream out;
    out << "dpm-solver++-2m (multistep order 2, log-SNR uniform), " << steps_ << " steps";
    return out.str();
  }
  int64_t evaluations() const override { return steps_; }

  Tensor sample(const DenoiseFn& model, const Tensor& noise, Generator&) const override {
    autograd::NoGradGuard no_grad;
    const auto data_prediction = [&](const Tensor& x, double t) { return predict_data(model, vp_, time_offset_, x, t); };
    Tensor x = noise;
    Tensor previous = data_prediction(x, times_[0]), older;
    double h_previous = 0.0;
    for (int64_t i = 1; i <= steps_; ++i) {
      const double s = times_[i - 1], t = times_[i];
      const double h = vp_.lambda(t) - vp_.lambda(s);
      const double phi = std::expm1(-h);
      const bool first_order = i == 1 || (i == steps_ && steps_ < 10);
      x = ops::sub(ops::mul(x, vp_.sigma(t) / vp_.sigma(s)), ops::mul(previous, vp_.alpha(t) * phi));
      if (!first_order) {  // the second-order correction from the last two data predictions
        const double r = h_previous / h;
        x = ops::sub(x, ops::mul(ops::sub(previous, older), 0.5 * vp_.alpha(t) * phi / r));
      }
      h_previous = h;
      if (i < steps_) {
        older = previous;
        previous = data_prediction(x, t);
      }
    }
    return x;
  }

 private:
  ContinuousVpSchedule vp_;
  double time_offset_;
  int64_t steps_;
  std::vector<double> times_;
};

// U-ViT's reference sampler ("DPM-Solver-fast" with data prediction): a uniform time grid of steps + 1 points from
// t = 1 to t = 1 / T, walked by singlestep updates of order 3 (two intermediate evaluations at the next grid
// points), ending with orders 2 and 1 as the step count requires, so every grid point costs one evaluation.
class DpmSolverPlusPlusFast : public Sampler {
 public:
  DpmSolverPlusPlusFast(const GaussianSchedule& schedule, double time_offset, int64_t steps)
      : vp_(schedule), time_offset_(time_offset), steps_(steps) {
    DCAE_CHECK(steps >= 1, "dpm-solver++: need at least 1 step, got ", steps);
    const double t_end = 1.0 / static_cast<double>(vp_.total_steps());
    for (int64_t i = 0; i <= steps; ++i) times_.push_back(1.0 + (t_end - 1.0) * i / static_cast<double>(steps));
    const int64_t k = steps / 3 + 1;
    if (steps % 3 == 0) orders_.assign(k - 2, 3), orders_.push_back(2), orders_.push_back(1);
    else orders_.assign(k - 1, 3), orders_.push_back(steps % 3);
    if (steps < 3) orders_ = steps == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>{2};
  }
  std::string summary() const override {
    std::ostringstream out;
    out << "dpm-solver++ (singlestep fast, order 3, time-uniform), " << steps_ << " steps";
    return out.str();
  }
  int64_t evaluations() const override { return steps_; }

  Tensor sample(const DenoiseFn& model, const Tensor& noise, Generator&) const override {
    autograd::NoGradGuard no_grad;
    const auto data_prediction = [&](const Tensor& x, double t) { return predict_data(model, vp_, time_offset_, x, t); };
    Tensor x = noise;
    size_t i = 0;
    for (int64_t order : orders_) {
      const double s = times_[i], t = times_[i + order];
      const double lambda_s = vp_.lambda(s), h = vp_.lambda(t) - lambda_s;
      const double phi_1 = std::expm1(-h);
      const Tensor m_s = data_prediction(x, s);
      const Tensor first = ops::sub(ops::mul(x, vp_.sigma(t) / vp_.sigma(s)), ops::mul(m_s, vp_.alpha(t) * phi_1));
      if (order == 1) {
        x = first;
      } else {
        const double s1 = times_[i + 1], r1 = (vp_.lambda(s1) - lambda_s) / h;
        const Tensor x_s1 = ops::sub(ops::mul(x, vp_.sigma(s1) / vp_.sigma(s)),
                                     ops::mul(m_s, vp_.alpha(s1) * std::expm1(-r1 * h)));
        const Tensor m_s1 = data_prediction(x_s1, s1);
        if (order == 2) {
          x = ops::sub(first, ops::mul(ops::sub(m_s1, m_s), 0.5 / r1 * vp_.alpha(t) * phi_1));
        } else {
          const double s2 = times_[i + 2], r2 = (vp_.lambda(s2) - lambda_s) / h;
          const double phi_22 = std::expm1(-r2 * h) / (r2 * h) + 1.0, phi_2 = phi_1 / h + 1.0;
          const Tensor x_s2 = ops::add(ops::sub(ops::mul(x, vp_.sigma(s2) / vp_.sigma(s)),
                                                ops::mul(m_s, vp_.alpha(s2) * std::expm1(-r2 * h))),
                                       ops::mul(ops::sub(m_s1, m_s), r2 / r1 * vp_.alpha(s2) * phi_22));
          const Tensor m_s2 = data_prediction(x_s2, s2);
          x = ops::add(first, ops::mul(ops::sub(m_s2, m_s), vp_.alpha(t) * phi_2 / r2));
        }
      }
      i += static_cast<size_t>(order);
    }
    return x;
  }

 private:
  ContinuousVpSchedule vp_;
  double time_offset_;
  int64_t steps_;
  std::vector<double> times_;
  std::vector<int64_t> orders_;
};

class FlowOdeSampler : public Sampler {
 public:
  FlowOdeSampler(std::string method, int64_t steps) : method_(std::move(method)), steps_(steps) {
    DCAE_CHECK(method_ == "euler" || method_ == "heun", "flow ODE sampler '", method_, "': expected euler or heun");
    DCAE_CHECK(steps >= 1, "flow ODE sampler: need at least 1 step, got ", steps);
  }
  std::string summary() const override {
    std::ostringstream out;
    out << "flow ODE " << method_ << ", " << steps_ << " uniform steps from t = 0 to 1";
    return out.str();
  }
  int64_t evaluations() const override { return method_ == "heun" ? 2 * steps_ : steps_; }

  Tensor sample(const DenoiseFn& model, const Tensor& noise, Generator&) const override {
    autograd::NoGradGuard no_grad;
    const double h = 1.0 / static_cast<double>(steps_);
    Tensor x = noise;
    for (int64_t i = 0; i < steps_; ++i) {
      const double t = i * h;
      const Tensor k1 = model(x, time_vector(t, x));
      DCAE_CHECK(k1.shape() == x.shape(), "flow ODE sampler: the denoiser returned ", k1.str(), " for ", x.str());
      if (method_ == "euler") {
        x = ops::add(x, ops::mul(k1, h));
      } else {
        const Tensor k2 = model(ops::add(x, ops::mul(k1, h)), time_vector(t + h, x));
        x = ops::add(x, ops::mul(ops::add(k1, k2), 0.5 * h));
      }
    }
    return x;
  }

 private:
  std::string method_;
  int64_t steps_;
};

}  // namespace

std::unique_ptr<Sampler> make_ddpm_sampler(const GaussianSchedule& schedule, double time_offset, int64_t steps) {
  return std::make_unique<DdpmSampler>(schedule, time_offset, steps);
}
std::unique_ptr<Sampler> make_dpm_solver_pp_sampler(const GaussianSchedule& schedule, double time_offset,
                                                    int64_t steps) {
  return std::make_unique<DpmSolverPlusPlus>(schedule, time_offset, steps);
}
std::unique_ptr<Sampler> make_dpm_solver_pp_fast_sampler(const GaussianSchedule& schedule, double time_offset,
                                                         int64_t steps) {
  return std::make_unique<DpmSolverPlusPlusFast>(schedule, time_offset, steps);
}
std::unique_ptr<Sampler> make_flow_ode_sampler(const std::string& method, int64_t steps) {
  return std::make_unique<FlowOdeSampler>(method, steps);
}

DenoiseFn guided_denoiser(LabelledNet net, Tensor labels, int64_t null_label, double scale, int64_t guided_channels) {
  if (scale == 1.0) return [net, labels](const Tensor& x, const Tensor& t) { return net(x, t, labels); };
  const Tensor both_labels = ops::concat({labels, full(labels.shape(), static_cast<double>(null_label), DType::i64,
                                                       labels.device())}, 0);
  return [net, both_labels, scale, guided_channels](const Tensor& x, const Tensor& t) {
    const int64_t n = x.size(0);
    const Tensor out = net(ops::concat({x, x}, 0), ops::concat({t, t}, 0), both_labels);
    const Tensor cond = ops::narrow(out, 0, 0, n), uncond = ops::narrow(out, 0, n, n);
    const int64_t c = guided_channels;
    DCAE_CHECK(out.size(3) >= c, "classifier-free guidance: the denoiser returned ", out.str(), ", fewer than ", c,
               " channels");
    const Tensor cond_part = ops::narrow(cond, 3, 0, c), uncond_part = ops::narrow(uncond, 3, 0, c);
    const Tensor guided = ops::add(uncond_part, ops::mul(ops::sub(cond_part, uncond_part), scale));
    if (out.size(3) == c) return guided;
    return ops::concat({guided, ops::narrow(cond, 3, c, out.size(3) - c)}, 3);
  };
}

}  // namespace dcae::trainer::diffusion
