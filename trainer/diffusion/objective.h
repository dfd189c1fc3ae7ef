// Diffusion training objectives: what noise a batch of clean latents x_0 gets, what the network sees and the loss
// on its prediction. Each is a registered unit (registries().diffusion_objectives, chosen by diffusion.objective):
//
//   ddpm           DiT (improved DDPM): linear betas 1e-4..0.02 over 1000 steps, t uniform in {0..999} (the network
//                  gets t as is), noise prediction; when the network also outputs a variance (2C channels) the
//                  hybrid loss mse + VLB, the VLB taken with the predicted mean frozen (it trains only the variance)
//   uvit-ddpm      U-ViT: "scaled_linear" betas (sqrt-linspace 0.00085..0.012), n uniform in {1..1000} (the network
//                  gets n), noise prediction, plain MSE
//   flow-matching  SiT / USiT: the linear path x_t = t * x_1 + (1 - t) * eps (t = 0 noise, t = 1 data), t uniform in
//                  [0, 1], velocity prediction u = x_1 - eps, MSE
//
// The draw (timesteps and noise) is separate from the loss so tests can fix it and compare against a plain formula.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor/philox.h"
#include "core/tensor/tensor.h"
#include "trainer/diffusion/noise_schedule.h"

namespace dcae::trainer {
class Recipe;
}

namespace dcae::trainer::diffusion {

// The network as the objectives and samplers see it: noisy latents (NHWC, f32) and the model time [N] (f32) to its
// prediction (NHWC, f32). Labels, dtype casts and classifier-free guidance live inside the function.
using DenoiseFn = std::function<Tensor(const Tensor& x_t, const Tensor& t)>;

struct ObjectiveDraw {
  std::vector<int64_t> index;  // discrete objectives: the 0-based diffusion step of each sample
  std::vector<double> t;       // the model time of each sample (what the network is given)
  Tensor noise;                // standard normal, x_0's shape
};

struct ObjectiveLoss {
  Tensor loss;  // the scalar to minimise (f32)
  std::vector<std::pair<std::string, Tensor>> terms;  // its parts for the log ("mse", "vb"), detached scalars
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;
  virtual std::string summary() const = 0;
  // Timesteps and noise for the batch x_0, from `gen`.
  virtual ObjectiveDraw draw(const Tensor& x0, Generator& gen) const = 0;
  // The network's input for a draw: x_t from q(x_t | x_0).
  virtual Tensor noised(const Tensor& x0, const ObjectiveDraw& draw) const = 0;
  virtual ObjectiveLoss loss(const DenoiseFn& model, const Tensor& x0, const ObjectiveDraw& draw) const = 0;
  ObjectiveLoss loss(const DenoiseFn& model, const Tensor& x0, Generator& gen) const {
    return loss(model, x0, draw(x0, gen));
  }
  // The discrete Gaussian schedule (ddpm, uvit-ddpm) and the offset between step index and model time (0 for DiT,
  // 1 for U-ViT); null for flow matching.
  virtual const GaussianSchedule* gaussian_schedule() const { return nullptr; }
  virtual double time_offset() const { return 0.0; }
};

struct ObjectiveSpec {
  std::string name;
  int64_t train_steps = 1000;  // diffusion.train_steps: T of the discrete objectives
  const Recipe* recipe = nullptr;
};
using ObjectiveFactory = std::function<std::unique_ptr<Objective>(const ObjectiveSpec&)>;

// The built-ins.
std::unique_ptr<Objective> make_ddpm_objective(std::string name, std::vector<double> betas, double time_offset);
std::unique_ptr<Objective> make_flow_matching_objective();

// Improved DDPM's pieces, exposed for tests (element-wise, f32 tensors; log variances broadcast):
// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats.
Tensor normal_kl(const Tensor& mean1, const Tensor& logvar1, const Tensor& mean2, const Tensor& logvar2);
// log P(x) per element of a Gaussian discretised into 255 bins over [-1, 1] (the outer bins open-ended).
Tensor discretized_gaussian_log_likelihood(const Tensor& x, const Tensor& means, const Tensor& log_scales);

}  // namespace dcae::trainer::diffusion
