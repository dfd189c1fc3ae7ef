// The process-wide registries a recipe selects implementations from. Built-ins are registered on first use;
// plugins add their own through PluginApi (trainer/plugin.h). Adding a registry here changes the plugin ABI: bump
// kPluginApiVersion (trainer/plugin.h).
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "trainer/data_sources.h"
#include "trainer/diffusion/denoisers.h"
#include "trainer/diffusion/latent_data.h"
#include "trainer/diffusion/objective.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/job_model.h"
#include "trainer/losses.h"
#include "trainer/optim/optimizer.h"
#include "trainer/registry.h"
#include "trainer/schedule.h"

namespace dcae::trainer {

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>, const OptimizerConfig&)>;
using ScheduleFactory = std::function<std::unique_ptr<Schedule>(const ScheduleConfig&)>;

struct Registries {
  Registry<OptimizerFactory> optimizers{"optimizer"};  // adamw, sgd
  Registry<ScheduleFactory> schedules{"lr schedule"};  // constant, cosine
  Registry<ModelFactory> models{"model"};              // every published DC-AE name, dc-ae-custom
  Registry<LossFactory> losses{"loss"};                // l1, mse, lpips, gan
  Registry<DatasetFactory> datasets{"dataset"};        // shards, synthetic, folder
  // The diffusion job (job = "diffusion", trainer/diffusion/).
  Registry<diffusion::DenoiserFactory> denoisers{"denoiser"};                  // tiny-conv-denoiser (+ nn/diffusion's zoo)
  Registry<diffusion::ObjectiveFactory> diffusion_objectives{"diffusion objective"};  // ddpm, uvit-ddpm, flow-matching
  Registry<diffusion::SamplerFactory> diffusion_samplers{"diffusion sampler"};  // ddpm, dpm-solver++, euler, heun
  Registry<diffusion::LatentDatasetFactory> latent_datasets{"latent dataset"};  // latent_shards, synthetic
};

// The registries with the built-ins in place.
Registries& registries();

// Builds groups from the trainable parameters and creates the optimizer named by config.name.
std::unique_ptr<Optimizer> make_optimizer(const std::vector<nn::NamedTensor>& params, const OptimizerConfig& config,
                                          const Registries& from = registries());
std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config, const Registries& from = registries());

// The built-in loss terms (trainer/losses.cpp), for registries built by hand.
void register_builtin_losses(Registry<LossFactory>& losses);
// The diffusion job's built-ins: denoisers, objectives, samplers, latent datasets (trainer/diffusion/builtins.cpp).
void register_diffusion_builtins(Registries& r);

}  // namespace dcae::trainer
