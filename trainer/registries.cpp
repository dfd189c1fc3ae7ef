#include "trainer/registries.h"

#include "trainer/optim/adamw.h"
#include "trainer/optim/sgd.h"
#include "nn/dcae/config.h"

namespace dcae::trainer {

namespace {
void register_builtins(Registries& r) {
  r.optimizers.add(
      "adamw",
      [](std::vector<ParamGroup> groups, const OptimizerConfig& c) -> std::unique_ptr<Optimizer> {
        return std::make_unique<AdamW>(std::move(groups), c);
      },
      "AdamW with decoupled weight decay");
  r.optimizers.add(
      "sgd",
      [](std::vector<ParamGroup> groups, const OptimizerConfig& c) -> std::unique_ptr<Optimizer> {
        return std::make_unique<Sgd>(std::move(groups), c);
      },
      "SGD with momentum");
  r.schedules.add(
      "constant",
      [](const ScheduleConfig& c) -> std::unique_ptr<Schedule> { return std::make_unique<ConstantSchedule>(c); },
      "linear warmup, then constant");
  r.schedules.add(
      "cosine", [](const ScheduleConfig& c) -> std::unique_ptr<Schedule> { return std::make_unique<CosineSchedule>(c); },
      "linear warmup, then cosine decay to min_lr_ratio");
  std::vector<std::string> model_names = nn::dcae_model::published_config_names();
  model_names.push_back("dc-ae-custom");
  for (const std::string& name : model_names) {
    r.models.add(
        name,
        [](const ModelSpec& spec) {
          return make_dcae_train_model(dcae_config_with_overrides(spec.name, spec.config), spec.name, spec.init);
        },
        name == "dc-ae-custom" ? "DC-AE from model.config alone (diffusers' defaults for what it leaves out)"
                               : "published DC-AE configuration, model.config overrides its fields");
  }
  register_builtin_losses(r.losses);
  r.datasets.add("shards", make_shard_source, "HDF5 shards (data.shards, data.eval_shards) through the loader");
  r.datasets.add("synthetic", make_synthetic_source, "generated smooth images (data.synthetic_images)");
  r.datasets.add("folder", make_folder_source, "PNG/JPEG files under data.folder, held in memory");
  register_diffusion_builtins(r);
}
}  // namespace

Registries& registries() {
  static Registries* instance = [] {
    auto* r = new Registries();  // never destroyed: plugin factories may outlive static destruction order
    register_builtins(*r);
    return r;
  }();
  return *instance;
}

std::unique_ptr<Optimizer> make_optimizer(const std::vector<nn::NamedTensor>& params, const OptimizerConfig& config,
                                          const Registries& from) {
  const OptimizerFactory& factory = from.optimizers.get(config.name);  // unknown names fail before grouping
  return factory(build_param_groups(params, config), config);
}

std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config, const Registries& from) {
  return from.schedules.create(config.name, config);
}

}  // namespace dcae::trainer
