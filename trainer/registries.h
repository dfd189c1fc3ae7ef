// The process-wide registries a recipe selects implementations from. Built-ins are registered on first use;
// plugins add their own through PluginApi (trainer/plugin.h). The second half of the trainer adds models, losses,
// datasets, metrics and exporters here (and bumps the plugin API version).
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "trainer/optim/optimizer.h"
#include "trainer/registry.h"
#include "trainer/schedule.h"

namespace dcae::trainer {

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>, const OptimizerConfig&)>;
using ScheduleFactory = std::function<std::unique_ptr<Schedule>(const ScheduleConfig&)>;

struct Registries {
  Registry<OptimizerFactory> optimizers{"optimizer"};  // adamw, sgd
  Registry<ScheduleFactory> schedules{"lr schedule"};  // constant, cosine
};

// The registries with the built-ins in place.
Registries& registries();

// Builds groups from the trainable parameters and creates the optimizer named by config.name.
std::unique_ptr<Optimizer> make_optimizer(const std::vector<nn::NamedTensor>& params, const OptimizerConfig& config,
                                          const Registries& from = registries());
std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config, const Registries& from = registries());

}  // namespace dcae::trainer
