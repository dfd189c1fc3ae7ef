#include "trainer/optim/adamw.h"

#include "trainer/optim/update_math.h"

namespace dcae::trainer {

AdamW::AdamW(std::vector<ParamGroup> groups, double beta1, double beta2, double eps)
    : Optimizer(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {
  DCAE_CHECK(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0, "AdamW: betas must lie in [0, 1), got (", beta1,
             ", ", beta2, ")");
  DCAE_CHECK(eps >= 0.0, "AdamW: eps must be >= 0, got ", eps);
}

AdamWHyper AdamW::begin_update(const ParamGroup& group, const Tensor& master, ParamState& state) const {
  if (state.slots.empty()) {
    state.slots["exp_avg"] = zeros(master.shape(), master.dtype(), master.device());
    state.slots["exp_avg_sq"] = zeros(master.shape(), master.dtype(), master.device());
  }
  ++state.step;
  AdamWHyper h;
  h.lr = group.lr;
  h.beta1 = beta1_;
  h.beta2 = beta2_;
  h.eps = eps_;
  h.weight_decay = group.weight_decay;
  h.step = state.step;
  return h;
}

void AdamW::update(const ParamGroup& group, const std::string&, const Tensor& master, const Tensor& grad,
                   ParamState& state) {
  const AdamWHyper h = begin_update(group, master, state);
  adamw_update(master, grad, state.slots.at("exp_avg"), state.slots.at("exp_avg_sq"), h);
}

void AdamW::update_all(const std::vector<PendingUpdate>& updates) {
  std::vector<AdamWTensors> batch;
  batch.reserve(updates.size());
  for (const PendingUpdate& u : updates) {
    const AdamWHyper h = begin_update(*u.group, u.master, *u.state);
    batch.push_back({u.master, u.grad, u.state->slots.at("exp_avg"), u.state->slots.at("exp_avg_sq"), u.param, h});
  }
  adamw_update_many(batch);
}

}  // namespace dcae::trainer
