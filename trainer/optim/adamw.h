// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay and bias correction, state exp_avg and exp_avg_sq
// in the master's dtype (fp32 for f32/bf16/f16 parameters). Per-group lr and weight decay; the no-decay group has
// weight_decay 0 (see build_param_groups).
#pragma once
#include "trainer/optim/optimizer.h"
#include "trainer/optim/update_math.h"

namespace dcae::trainer {

class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  AdamW(std::vector<ParamGroup> groups, const OptimizerConfig& config)
      : AdamW(std::move(groups), config.beta1, config.beta2, config.eps) {}
  std::string type() const override { return "adamw"; }

 protected:
  void update(const ParamGroup& group, const std::string& name, const Tensor& master, const Tensor& grad,
              ParamState& state) override;
  // Every parameter in one adamw_update_many call: one fused kernel launch on GPU.
  void update_all(const std::vector<PendingUpdate>& updates) override;

 private:
  // Creates the moments on first use and counts the step; returns the hyperparameters of this update.
  AdamWHyper begin_update(const ParamGroup& group, const Tensor& master, ParamState& state) const;

  double beta1_, beta2_, eps_;
};

}  // namespace dcae::trainer
