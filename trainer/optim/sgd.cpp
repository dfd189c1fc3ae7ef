#include "trainer/optim/sgd.h"

#include "trainer/optim/update_math.h"

namespace dcae::trainer {

Sgd::Sgd(std::vector<ParamGroup> groups, double momentum, bool nesterov)
    : Optimizer(std::move(groups)), momentum_(momentum), nesterov_(nesterov) {
  DCAE_CHECK(momentum >= 0.0 && momentum < 1.0, "SGD: momentum must lie in [0, 1), got ", momentum);
  DCAE_CHECK(!nesterov || momentum > 0.0, "SGD: Nesterov needs momentum > 0");
}

void Sgd::update(const ParamGroup& group, const std::string& name, const Tensor& master, const Tensor& grad,
                 ParamState& state) {
  SgdHyper h;
  h.lr = group.lr;
  h.momentum = momentum_;
  h.weight_decay = group.weight_decay;
  h.nesterov = nesterov_;
  h.first_step = false;
  Tensor buffer;
  if (momentum_ != 0.0) {
    if (!state.slots.count("momentum_buffer")) {
      state.slots["momentum_buffer"] = zeros(master.shape(), master.dtype());
      h.first_step = true;
    }
    buffer = state.slots.at("momentum_buffer");
  }
  ++state.step;
  sgd_update(master, grad, buffer, h);
}

}  // namespace dcae::trainer
