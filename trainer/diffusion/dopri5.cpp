// The flow-matching ODE dx/dt = v(x, t) from t = 0 (noise) to 1 (data) with the Dormand-Prince 5(4) pair and
// adaptive steps: what the USiT reference evaluates with (torchdiffeq's dopri5, atol 1e-6, rtol 1e-3). The error
// estimate is the RMS over the whole batch of the 5th-minus-4th-order difference, scaled by atol + rtol * |x|
// (torchdiffeq's mixed norm over one tensor); a step is kept when that is at most 1, and the next size follows
// h * 0.9 * err^(-1/5) within [0.2 h, 10 h]. The last stage of a kept step is the first of the next (FSAL).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <sstream>

#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "trainer/diffusion/sampler.h"

namespace dcae::trainer::diffusion {

namespace {

// Butcher tableau of Dormand and Prince (1980): nodes, stage weights, 5th-order weights and the error weights
// (5th minus 4th order).
constexpr double kC[7] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
constexpr double kA[7][6] = {
    {},
    {1.0 / 5},
    {3.0 / 40, 9.0 / 40},
    {44.0 / 45, -56.0 / 15, 32.0 / 9},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
    {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
constexpr double kE[7] = {35.0 / 384 - 5179.0 / 57600,      0.0, 500.0 / 1113 - 7571.0 / 16695,
                          125.0 / 192 - 393.0 / 640,        -2187.0 / 6784 + 92097.0 / 339200,
                          11.0 / 84 - 187.0 / 2100,         -1.0 / 40};

Tensor time_vector(double t, const Tensor& like) { return full({like.size(0)}, t, DType::f32, like.device()); }

// x + h * sum_j a[j] k[j] over the stages given.
Tensor combine(const Tensor& x, double h, const double* a, const std::vector<Tensor>& k, size_t stages) {
  Tensor sum = x;
  for (size_t j = 0; j < stages; ++j)
    if (a[j] != 0.0) sum = ops::add(sum, ops::mul(k[j], h * a[j]));
  return sum;
}

class Dopri5FlowSampler : public Sampler {
 public:
  Dopri5FlowSampler(double rtol, double atol, int64_t max_steps) : rtol_(rtol), atol_(atol), max_steps_(max_steps) {
    DCAE_CHECK(rtol > 0 && atol > 0 && max_steps > 0, "dopri5: tolerances and the step limit must be positive");
  }
  std::string summary() const override {
    std::ostringstream out;
    out << "flow ODE dopri5 (adaptive, rtol " << rtol_ << ", atol " << atol_ << ") from t = 0 to 1";
    return out.str();
  }
  // Adaptive: the evaluations of the most recent sample() (0 before the first).
  int64_t evaluations() const override { return last_evaluations_.load(); }

  Tensor sample(const DenoiseFn& model, const Tensor& noise, Generator&) const override {
    autograd::NoGradGuard no_grad;
    int64_t evaluations = 0;
    const auto f = [&](const Tensor& x, double t) {
      ++evaluations;
      const Tensor v = model(x, time_vector(t, x));
      DCAE_CHECK(v.shape() == x.shape(), "dopri5: the denoiser returned ", v.str(), " for ", x.str());
      return v;
    };
    Tensor x = noise;
    double t = 0.0, h = 0.05;  // the controller settles the size within a step or two
    std::vector<Tensor> k(7);
    k[0] = f(x, t);
    int64_t steps = 0;
    while (t < 1.0) {
      DCAE_CHECK(++steps <= max_steps_, "dopri5: more than ", max_steps_, " steps to reach t = 1 (at t = ", t,
                 ", step ", h, "): the velocity field is too stiff for rtol ", rtol_);
      h = std::min(h, 1.0 - t);
      for (int s = 1; s < 7; ++s) k[s] = f(combine(x, h, kA[s], k, s), t + kC[s] * h);
      const Tensor next = combine(x, h, kA[6], k, 6);  // the 5th-order solution (k[6] was evaluated there)
      Tensor error = ops::mul(k[0], h * kE[0]);
      for (int s = 2; s < 7; ++s) error = ops::add(error, ops::mul(k[s], h * kE[s]));
      const Tensor scale = ops::add(ops::mul(ops::maximum(ops::abs(x), ops::abs(next)), rtol_), atol_);
      const double err = std::sqrt(ops::mean(ops::square(ops::div(error, scale))).item<double>());
      DCAE_CHECK(std::isfinite(err), "dopri5: the error estimate is not finite at t = ", t,
                 " (the denoiser returned NaN or Inf)");
      if (err <= 1.0) {
        x = next;
        t = t + h >= 1.0 - 1e-12 ? 1.0 : t + h;
        k[0] = k[6];
      }
      const double factor = err == 0.0 ? 10.0 : std::clamp(0.9 * std::pow(err, -0.2), 0.2, 10.0);
      h *= factor;
    }
    last_evaluations_ = evaluations;
    return x;
  }

 private:
  double rtol_, atol_;
  int64_t max_steps_;
  mutable std::atomic<int64_t> last_evaluations_{0};
};

}  // namespace

std::unique_ptr<Sampler> make_dopri5_flow_sampler(double rtol, double atol, int64_t max_steps) {
  return std::make_unique<Dopri5FlowSampler>(rtol, atol, max_steps);
}

}  // namespace dcae::trainer::diffusion
