// Discrete-time Gaussian diffusion (DDPM) schedules as host tables in double precision: betas, the cumulative
// products, the posterior q(x_{t-1} | x_t, x_0), respacing (DiT's "250 of 1000 steps") and the continuous-time view
// DPM-Solver uses (log alpha interpolated between the discrete steps). Indices are 0-based: entry i is the
// diffusion step i + 1 of the papers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::trainer::diffusion {

// "linear": betas linspace(1e-4, 0.02, T) scaled by 1000 / T (DDPM, DiT); "scaled_linear":
// linspace(sqrt(0.00085), sqrt(0.012), T)^2 (Stable Diffusion, U-ViT).
std::vector<double> make_betas(const std::string& kind, int64_t steps);

class GaussianSchedule {
 public:
  explicit GaussianSchedule(std::vector<double> betas);
  int64_t steps() const { return static_cast<int64_t>(betas_.size()); }

  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  // Var of q(x_{t-1} | x_t, x_0), its log with the t = 0 entry clipped to the t = 1 one, and the mean's weights
  // of x_0 and x_t.
  const std::vector<double>& posterior_variance() const { return posterior_variance_; }
  const std::vector<double>& posterior_log_variance_clipped() const { return posterior_log_variance_clipped_; }
  const std::vector<double>& posterior_mean_coef_x0() const { return posterior_mean_coef_x0_; }
  const std::vector<double>& posterior_mean_coef_xt() const { return posterior_mean_coef_xt_; }

  // The schedule that keeps only `kept` (ascending original indices) with the same alphas_cumprod there
  // (improved DDPM's respacing): beta'_k = 1 - abar[kept[k]] / abar[kept[k-1]].
  GaussianSchedule respaced(const std::vector<int64_t>& kept) const;

 private:
  std::vector<double> betas_, alphas_cumprod_, posterior_variance_, posterior_log_variance_clipped_,
      posterior_mean_coef_x0_, posterior_mean_coef_xt_;
};

// The original indices improved DDPM's space_timesteps(T, "K") keeps: K steps evenly spaced over [0, T - 1],
// rounded, first and last included.
std::vector<int64_t> evenly_spaced_steps(int64_t total, int64_t kept);

// One value per sample, `values[index[i]]`, shaped [N, 1, 1, 1] to broadcast over NHWC latents.
Tensor per_sample(const std::vector<double>& values, const std::vector<int64_t>& index, DType dtype, Device device);
// Every sample the same value, [N, 1, 1, 1].
Tensor per_sample_constant(double value, int64_t n, DType dtype, Device device);

// The continuous-time view of a discrete schedule (DPM-Solver's NoiseScheduleVP "discrete"): step i sits at
// t = (i + 1) / T, log alpha(t) = 0.5 * log abar is interpolated linearly in t; sigma = sqrt(1 - alpha^2),
// lambda = log alpha - log sigma (half the log-SNR).
class ContinuousVpSchedule {
 public:
  explicit ContinuousVpSchedule(const GaussianSchedule& discrete);
  int64_t total_steps() const { return static_cast<int64_t>(t_.size()); }
  double log_alpha(double t) const;
  double alpha(double t) const;
  double sigma(double t) const;
  double lambda(double t) const;
  double inverse_lambda(double lambda) const;

 private:
  std::vector<double> t_, log_alpha_;
};

}  // namespace dcae::trainer::diffusion
