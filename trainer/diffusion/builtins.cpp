// The diffusion job's registry entries: the tiny denoiser, the three objectives, the samplers and the latent sources.
#include "nn/diffusion/zoo.h"
#include "trainer/registries.h"

namespace dcae::trainer {

namespace {

const diffusion::GaussianSchedule& gaussian_schedule_for(const diffusion::SamplerSpec& spec) {
  DCAE_CHECK(spec.objective != nullptr, "diffusion sampler '", spec.name, "' built without an objective");
  const diffusion::GaussianSchedule* schedule = spec.objective->gaussian_schedule();
  DCAE_CHECK(schedule != nullptr, "diffusion.sampler = \"", spec.name, "\" samples a discrete Gaussian diffusion, but ",
             "diffusion.objective = \"", spec.objective->name(), "\" is not one (use euler, heun or dopri5)");
  return *schedule;
}

void check_flow(const diffusion::SamplerSpec& spec) {
  DCAE_CHECK(spec.objective != nullptr && spec.objective->gaussian_schedule() == nullptr, "diffusion.sampler = \"",
             spec.name, "\" integrates a flow-matching ODE, but diffusion.objective = \"",
             spec.objective ? spec.objective->name() : std::string("(none)"), "\" is not flow matching (use ddpm or dpm-solver++)");
}

}  // namespace

void register_diffusion_builtins(Registries& r) {
  for (const std::string& name : nn::diffusion::diffusion_model_names())
    r.denoisers.add(
        name,
        [](const diffusion::DenoiserSpec& s) -> std::shared_ptr<nn::diffusion::Denoiser> {
          return nn::diffusion::make_diffusion_model(s.name, s.shape, s.config, s.init);
        },
        "diffusion transformer from nn/diffusion's zoo (model.config overrides its fields)");
  r.denoisers.add("tiny-conv-denoiser", diffusion::make_tiny_conv_denoiser,
                  "a few 3x3 convolutions with timestep MLP and class embedding (CPU tests; config width, blocks, learn_sigma)");

  r.diffusion_objectives.add(
      "ddpm",
      [](const diffusion::ObjectiveSpec& s) {
        return diffusion::make_ddpm_objective("ddpm", diffusion::make_betas("linear", s.train_steps), 0.0);
      },
      "DiT: linear betas, t in 0..T-1, noise prediction; hybrid mse + vb with a predicted variance");
  r.diffusion_objectives.add(
      "uvit-ddpm",
      [](const diffusion::ObjectiveSpec& s) {
        return diffusion::make_ddpm_objective("uvit-ddpm", diffusion::make_betas("scaled_linear", s.train_steps), 1.0);
      },
      "U-ViT: scaled-linear betas (0.00085..0.012), n in 1..T, noise prediction, mse");
  r.diffusion_objectives.add(
      "flow-matching", [](const diffusion::ObjectiveSpec&) { return diffusion::make_flow_matching_objective(); },
      "SiT/USiT: linear path, velocity prediction, t in [0, 1]");

  r.diffusion_samplers.add(
      "ddpm",
      [](const diffusion::SamplerSpec& s) {
        return diffusion::make_ddpm_sampler(gaussian_schedule_for(s), s.objective->time_offset(), s.steps);
      },
      "ancestral DDPM, respaced");
  r.diffusion_samplers.add(
      "dpm-solver++",
      [](const diffusion::SamplerSpec& s) {
        return diffusion::make_dpm_solver_pp_fast_sampler(gaussian_schedule_for(s), s.objective->time_offset(), s.steps);
      },
      "DPM-Solver++ fast (U-ViT's reference): singlestep order 3 on a time-uniform grid");
  r.diffusion_samplers.add(
      "dpm-solver++-2m",
      [](const diffusion::SamplerSpec& s) {
        return diffusion::make_dpm_solver_pp_sampler(gaussian_schedule_for(s), s.objective->time_offset(), s.steps);
      },
      "multistep DPM-Solver++ (2M), log-SNR uniform steps");
  for (const char* method : {"euler", "heun"})
    r.diffusion_samplers.add(
        method,
        [method](const diffusion::SamplerSpec& s) {
          check_flow(s);
          return diffusion::make_flow_ode_sampler(method, s.steps);
        },
        std::string("flow-matching ODE, fixed-step ") + method);
  r.diffusion_samplers.add(
      "dopri5",
      [](const diffusion::SamplerSpec& s) {
        check_flow(s);
        return diffusion::make_dopri5_flow_sampler();
      },
      "flow-matching ODE, adaptive Dormand-Prince 5(4) (rtol 1e-3, atol 1e-6, as the USiT reference; "
      "diffusion.sample_steps unused)");

  r.latent_datasets.add("latent_shards", diffusion::make_latent_shard_source, "dcae-encode latent shards (data.latent_shards)");
  r.latent_datasets.add("synthetic", diffusion::make_synthetic_latent_source,
                        "generated class-conditional latents (data.synthetic_latents)");
}

}  // namespace dcae::trainer
