// Samplers: from standard-normal latents to samples of the trained distribution, through a DenoiseFn (the network
// with labels and classifier-free guidance bound, see guided_denoiser). Registered by name
// (registries().diffusion_samplers, chosen by diffusion.sampler):
//
//   ddpm         ancestral DDPM (DiT), respaced to diffusion.sample_steps of the objective's T steps (improved
//                DDPM's space_timesteps); the network's variance when it predicts one, else the "fixed large"
//                variance (betas); no clipping of x_0
//   dpm-solver++ U-ViT's reference sampler: DPM-Solver++ (data prediction) "fast", on the objective's discrete
//                schedule seen in continuous time, a time-uniform grid of steps + 1 points from t = 1 to t = 1 / T,
//                singlestep updates of order 3 (evaluations at the next two grid points), the last ones of order
//                2 and 1 (30 steps: 9 x 3, 2, 1); one network evaluation per step
//   dpm-solver++-2m  multistep DPM-Solver++ of order 2 with steps uniform in log-SNR, first order at the first step
//                and (below 10 steps) at the last
//   euler, heun  the flow-matching ODE dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data) on a uniform grid
//                (Heun: 2 evaluations per step).
//   dopri5       the same ODE with adaptive Dormand-Prince 5(4) steps, as SiT's reference integrates it
//                (dopri5.cpp).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "trainer/diffusion/objective.h"

namespace dcae::trainer::diffusion {

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::string summary() const = 0;
  // Network evaluations per sample (before guidance doubles the batch).
  virtual int64_t evaluations() const = 0;
  // `noise`: standard-normal NHWC latents (f32), also the shape of the result; `gen` for ancestral noise.
  virtual Tensor sample(const DenoiseFn& model, const Tensor& noise, Generator& gen) const = 0;
};

struct SamplerSpec {
  std::string name;
  int64_t steps = 250;                  // diffusion.sample_steps
  const Objective* objective = nullptr;  // whose schedule and time convention the sampler follows
};
using SamplerFactory = std::function<std::unique_ptr<Sampler>(const SamplerSpec&)>;

std::unique_ptr<Sampler> make_ddpm_sampler(const GaussianSchedule& schedule, double time_offset, int64_t steps);
// dpm-solver++-2m and dpm-solver++ (the "fast" singlestep one).
std::unique_ptr<Sampler> make_dpm_solver_pp_sampler(const GaussianSchedule& schedule, double time_offset, int64_t steps);
std::unique_ptr<Sampler> make_dpm_solver_pp_fast_sampler(const GaussianSchedule& schedule, double time_offset,
                                                         int64_t steps);
// method "euler" or "heun".
std::unique_ptr<Sampler> make_flow_ode_sampler(const std::string& method, int64_t steps);
// Adaptive Dormand-Prince 5(4) on the flow ODE (trainer/diffusion/dopri5.cpp); the USiT reference's settings
// are rtol 1e-3, atol 1e-6.
std::unique_ptr<Sampler> make_dopri5_flow_sampler(double rtol = 1e-3, double atol = 1e-6, int64_t max_steps = 10000);

// The network called as net(x, t, labels) (NHWC f32 in and out).
using LabelledNet = std::function<Tensor(const Tensor& x, const Tensor& t, const Tensor& labels)>;

// Classifier-free guidance: with scale != 1 each call runs the batch twice in one forward (labels, then
// `null_label` for every sample) and returns uncond + scale * (cond - uncond) on the first `guided_channels`
// channels; further channels (a predicted variance) come from the conditional half. Scale 1 is one plain call.
DenoiseFn guided_denoiser(LabelledNet net, Tensor labels, int64_t null_label, double scale, int64_t guided_channels);

}  // namespace dcae::trainer::diffusion
