#include "trainer/optim/adamw.h"

#include "trainer/optim/update_math.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/capture_state.h"
#include "trainer/cuda/multi_tensor_adamw.h"
#endif

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
  if (capturable_) return update_all_on_device(updates);
  std::vector<AdamWTensors> batch;
  batch.reserve(updates.size());
  for (const PendingUpdate& u : updates) {
    const AdamWHyper h = begin_update(*u.group, u.master, *u.state);
    batch.push_back({u.master, u.grad, u.state->slots.at("exp_avg"), u.state->slots.at("exp_avg_sq"), u.param, h});
  }
  adamw_update_many(batch);
}

void AdamW::make_capturable() {
#ifdef DCAE_WITH_CUDA
  const std::vector<Tensor> all = params();
  const Device device = all.front().device();
  DCAE_CHECK(device.is_cuda(), "AdamW::make_capturable: parameters are on ", device,
             "; capturable steps need parameters on a GPU");
  DCAE_CHECK(!::dcae::cuda::capture_underway(device.index), "AdamW::make_capturable: call it before capturing, not during");
  device_lrs_ = zeros({static_cast<int64_t>(groups().size())}, DType::f64, device);
  device_steps_.clear();
  for (auto& [name, state] : param_states())
    device_steps_[name] = full({1}, static_cast<double>(state.step), DType::i64, device);
  capturable_ = true;
#else
  DCAE_FAIL("AdamW::make_capturable: this build has no CUDA backend");
#endif
}

void AdamW::clip_next_step(const Tensor& grad_norm, double max_norm) {
  DCAE_CHECK(capturable_, "AdamW::clip_next_step: only in capturable mode (make_capturable); eager steps clip with "
             "clip_grad_norm");
  DCAE_CHECK(grad_norm.defined() && grad_norm.numel() == 1 && grad_norm.dtype() == DType::f32 &&
                 grad_norm.device() == device_lrs_.device() && grad_norm.is_contiguous(),
             "AdamW::clip_next_step: the gradient norm must be one f32 on ", device_lrs_.device(), ", got ",
             grad_norm.defined() ? grad_norm.str() : "(undefined)");
  clip_norm_ = grad_norm;
  clip_max_norm_ = max_norm;
}

void AdamW::stage_step_scalars() {
  if (!capturable_) return;
  Tensor host = empty({static_cast<int64_t>(groups().size())}, DType::f64);
  for (size_t g = 0; g < groups().size(); ++g) host.data<double>()[g] = groups()[g].lr;
  device_lrs_.copy_(host);  // a small pageable copy: staged by the driver at once, no synchronisation
}

void AdamW::sync_steps_to_host() {
  if (!capturable_) return;
  for (auto& [name, step] : device_steps_) param_states()[name].step = step.to(Device::cpu()).data<int64_t>()[0];
}

void AdamW::update_all_on_device(const std::vector<PendingUpdate>& updates) {
#ifdef DCAE_WITH_CUDA
  const int device = device_lrs_.device().index;
  const bool capturing = ::dcae::cuda::capture_underway(device);
  if (!capturing) stage_step_scalars();  // a replay stages its lrs before it starts (GraphedTrainStep::replay)
  std::vector<cuda::CapturableAdamWTensor> batch;
  batch.reserve(updates.size());
  for (const PendingUpdate& u : updates) {
    ParamState& state = *u.state;
    if (state.slots.empty() || !device_steps_.count(*u.name)) {
      DCAE_CHECK(!capturing, "AdamW: parameter '", *u.name, "' has no optimizer state yet, and a CUDA graph capture ",
                 "cannot create it; run one eager step before capturing");
      if (state.slots.empty()) {
        state.slots["exp_avg"] = zeros(u.master.shape(), u.master.dtype(), u.master.device());
        state.slots["exp_avg_sq"] = zeros(u.master.shape(), u.master.dtype(), u.master.device());
      }
      device_steps_[*u.name] = full({1}, static_cast<double>(state.step), DType::i64, u.master.device());
    }
    cuda::CapturableAdamWTensor t;
    t.master = u.master;
    t.grad = u.grad;
    t.exp_avg = state.slots.at("exp_avg");
    t.exp_avg_sq = state.slots.at("exp_avg_sq");
    t.param = u.param;
    t.step = device_steps_.at(*u.name);
    t.group = static_cast<int32_t>(u.group - groups().data());
    t.weight_decay = u.group->weight_decay;
    batch.push_back(std::move(t));
  }
  cuda::CapturableAdamWScalars scalars;
  scalars.group_lrs = static_cast<const double*>(device_lrs_.raw_data());
  scalars.grad_norm = clip_norm_.defined() ? static_cast<const float*>(clip_norm_.raw_data()) : nullptr;
  scalars.max_norm = clip_max_norm_;
  scalars.beta1 = beta1_;
  scalars.beta2 = beta2_;
  scalars.eps = eps_;
  cuda::multi_tensor_adamw_capturable(batch, scalars);
  clip_norm_ = Tensor();
  clip_max_norm_ = 0.0;
#else
  (void)updates;
  DCAE_FAIL("AdamW: capturable steps need a CUDA build");
#endif
}

}  // namespace dcae::trainer
