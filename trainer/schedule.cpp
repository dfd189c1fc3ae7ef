#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "trainer/recipe.h"

namespace dcae::trainer {

ScheduleConfig schedule_config(const Recipe& recipe, const std::string& section, int64_t total_steps) {
  ScheduleConfig c;
  c.recipe = &recipe;
  c.section = section;
  c.name = recipe.get<std::string>(section + ".name");
  c.warmup_steps = recipe.get<int64_t>(section + ".warmup_steps");
  c.warmup_init_ratio = recipe.get<double>(section + ".warmup_init_ratio");
  c.min_lr_ratio = recipe.get<double>(section + ".min_lr_ratio");
  c.decay_steps = recipe.get<int64_t>(section + ".decay_steps");
  if (c.decay_steps == 0) c.decay_steps = total_steps;
  return c;
}

Schedule::Schedule(ScheduleConfig config) : config_(std::move(config)) {
  DCAE_CHECK(config_.warmup_steps >= 0, "schedule '", config_.name, "': warmup_steps must be >= 0, got ",
             config_.warmup_steps);
  DCAE_CHECK(config_.warmup_init_ratio >= 0.0 && config_.warmup_init_ratio <= 1.0, "schedule '", config_.name,
             "': warmup_init_ratio must lie in [0, 1], got ", config_.warmup_init_ratio);
  DCAE_CHECK(config_.min_lr_ratio >= 0.0 && config_.min_lr_ratio <= 1.0, "schedule '", config_.name,
             "': min_lr_ratio must lie in [0, 1], got ", config_.min_lr_ratio);
}

double Schedule::warmup_factor(int64_t step) const {
  if (step >= config_.warmup_steps) return 1.0;
  const double t = static_cast<double>(std::max<int64_t>(step, 0)) / static_cast<double>(config_.warmup_steps);
  return config_.warmup_init_ratio + (1.0 - config_.warmup_init_ratio) * t;
}

nlohmann::json Schedule::to_json() const {
  return {{"name", config_.name},
          {"warmup_steps", config_.warmup_steps},
          {"warmup_init_ratio", config_.warmup_init_ratio},
          {"min_lr_ratio", config_.min_lr_ratio},
          {"decay_steps", config_.decay_steps}};
}

CosineSchedule::CosineSchedule(ScheduleConfig config) : Schedule(std::move(config)) {
  DCAE_CHECK(this->config().decay_steps > this->config().warmup_steps, "cosine schedule: decay_steps (",
             this->config().decay_steps, ") must exceed warmup_steps (", this->config().warmup_steps, ")");
}

double CosineSchedule::factor(int64_t step) const {
  const ScheduleConfig& c = config();
  if (step < c.warmup_steps) return warmup_factor(step);
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) /
                                            static_cast<double>(c.decay_steps - c.warmup_steps));
  return c.min_lr_ratio + (1.0 - c.min_lr_ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace dcae::trainer
