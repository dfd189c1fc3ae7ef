// Dynamic loss scaling for fp16 compute: the loss is multiplied by `scale` before backward so small gradients
// survive fp16; gradients are divided by it again before clipping. A step whose gradients overflow halves the
// scale (and is skipped); `growth_interval` finite steps in a row double it.
#pragma once
#include <cstdint>

#include <nlohmann/json.hpp>

namespace dcae::trainer {

class DynamicLossScaler {
 public:
  DynamicLossScaler(double initial_scale, int64_t growth_interval)
      : scale_(initial_scale), growth_interval_(growth_interval) {}
  double scale() const { return scale_; }
  void update(bool finite_gradients) {
    if (!finite_gradients) {
      scale_ = scale_ / 2.0 < 1.0 ? 1.0 : scale_ / 2.0;
      good_steps_ = 0;
    } else if (++good_steps_ >= growth_interval_) {
      scale_ *= 2.0;
      good_steps_ = 0;
    }
  }
  nlohmann::json state() const { return {{"scale", scale_}, {"good_steps", good_steps_}}; }
  void load(const nlohmann::json& state) {
    scale_ = state.at("scale").get<double>();
    good_steps_ = state.at("good_steps").get<int64_t>();
  }

 private:
  double scale_;
  int64_t growth_interval_;
  int64_t good_steps_ = 0;
};

}  // namespace dcae::trainer
