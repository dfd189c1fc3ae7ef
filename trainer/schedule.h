// Learning-rate schedules as a multiplier of each param group's peak lr: a linear warmup from warmup_init_ratio to
// 1 over warmup_steps, then constant, or a cosine decay to min_lr_ratio at decay_steps. Pure functions of the step,
// so a resumed run needs only the step to continue exactly. Registered by name (trainer/registries.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace dcae::trainer {

class Recipe;

struct ScheduleConfig {
  std::string name = "constant";
  int64_t warmup_steps = 0;
  double warmup_init_ratio = 0.0;
  double min_lr_ratio = 0.0;
  int64_t decay_steps = 0;  // cosine horizon (total steps, warmup included)
  // The recipe section this came from (null when built by hand): plugin schedules read their own keys there.
  const Recipe* recipe = nullptr;
  std::string section;
};
// Reads a [schedule] section; decay_steps 0 means `total_steps` (train.steps).
ScheduleConfig schedule_config(const Recipe& recipe, const std::string& section, int64_t total_steps);

class Schedule {
 public:
  explicit Schedule(ScheduleConfig config);
  virtual ~Schedule() = default;
  // Multiplier of the peak lr for the update at 0-based `step`.
  virtual double factor(int64_t step) const = 0;
  double lr(int64_t step, double peak_lr) const { return peak_lr * factor(step); }
  const ScheduleConfig& config() const { return config_; }
  // The config as JSON, stored in checkpoints so a resume can tell when the schedule changed.
  nlohmann::json to_json() const;

 protected:
  // Linear warmup multiplier at `step` (1 once warmup is over).
  double warmup_factor(int64_t step) const;

 private:
  ScheduleConfig config_;
};

class ConstantSchedule final : public Schedule {
 public:
  using Schedule::Schedule;
  double factor(int64_t step) const override { return warmup_factor(step); }
};

// After warmup: min + (1 - min) * (1 + cos(pi * progress)) / 2, progress = (step - warmup) / (decay - warmup),
// held at min_lr_ratio after decay_steps.
class CosineSchedule final : public Schedule {
 public:
  explicit CosineSchedule(ScheduleConfig config);
  double factor(int64_t step) const override;
};

}  // namespace dcae::trainer
