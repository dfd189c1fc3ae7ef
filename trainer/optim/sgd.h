// SGD with optional momentum (and Nesterov) and coupled L2 weight decay, as torch.optim.SGD with dampening 0.
#pragma once
#include "trainer/optim/optimizer.h"

namespace dcae::trainer {

class Sgd final : public Optimizer {
 public:
  Sgd(std::vector<ParamGroup> groups, double momentum = 0.0, bool nesterov = false);
  Sgd(std::vector<ParamGroup> groups, const OptimizerConfig& config)
      : Sgd(std::move(groups), config.momentum, config.nesterov) {}
  std::string type() const override { return "sgd"; }

 protected:
  void update(const ParamGroup& group, const std::string& name, const Tensor& master, const Tensor& grad,
              ParamState& state) override;

 private:
  double momentum_;
  bool nesterov_;
};

}  // namespace dcae::trainer
