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

  // CUDA-graph capturable steps (parameters on one GPU). From this call on, every parameter's step count lives on
  // the device (one int64, seeded from state().step), each group's lr is copied to a device buffer before the step
  // (stage_step_scalars), and step() launches only kernels that read both there and advance the counts themselves
  // (trainer/cuda/multi_tensor_adamw.h): no host copy, no host read, so step() can run inside a CUDA graph capture
  // and every replay is one more step with the lr staged for it. The moments must exist before a capture (run one
  // eager step first). Calling it again re-seeds the device counts from state() (after load_state) in new device
  // buffers: a graph captured before reads the old ones, so capture again after it.
  void make_capturable();
  bool capturable() const { return capturable_; }
  // Capturable mode: the next step() clips the gradients on the device to `max_norm` by `grad_norm` (one f32 on
  // the device, from grad_norm_tensor) and skips the whole update, counts included, when the norm is non-finite.
  void clip_next_step(const Tensor& grad_norm, double max_norm);
  void stage_step_scalars() override;
  // Capturable mode: copies the device step counts into state().step (a host read: before checkpoints or reports).
  void sync_steps_to_host();

 protected:
  void update(const ParamGroup& group, const std::string& name, const Tensor& master, const Tensor& grad,
              ParamState& state) override;
  // Every parameter in one adamw_update_many call: one fused kernel launch on GPU.
  void update_all(const std::vector<PendingUpdate>& updates) override;

 private:
  // Creates the moments on first use and counts the step; returns the hyperparameters of this update.
  AdamWHyper begin_update(const ParamGroup& group, const Tensor& master, ParamState& state) const;

  // The capturable form of update_all.
  void update_all_on_device(const std::vector<PendingUpdate>& updates);

  double beta1_, beta2_, eps_;
  bool capturable_ = false;
  Tensor device_lrs_;                           // f64, one per group
  std::map<std::string, Tensor> device_steps_;  // int64 [1] per parameter
  Tensor clip_norm_;                            // for the next step only
  double clip_max_norm_ = 0.0;
};

}  // namespace dcae::trainer
