// Exponential moving average of weights: shadow = d * shadow + (1 - d) * weight after each optimizer step, with
// d = min(decay, (1 + s) / (10 + s)) during warmup (s = updates so far). Shadows are fp32 (f64 for f64 weights),
// saved and loaded with checkpoints, and swapped into the model for evaluation:
//
//   Ema ema(trainable_named_params, 0.999);
//   loop: optim->step(); ema.update_from(optim->named_masters());
//   { EmaSwapGuard use_ema(ema); evaluate(model); }   // weights restored on scope exit
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/module.h"

namespace dcae::trainer {

class Ema {
 public:
  // `params` are the model tensors the EMA follows and swaps into; the shadows start as their current values.
  Ema(std::vector<nn::NamedTensor> params, double decay, bool warmup = true);

  // One update from the parameters themselves.
  void update();
  // One update from `values` (the same names, any order), e.g. the optimizer's fp32 masters of bf16 weights.
  void update_from(const std::vector<nn::NamedTensor>& values);
  // CUDA-graph steps (train.cuda_graph): make_capturable() moves the update count to the device (seeded from
  // num_updates()); update_from_if then launches device ops only (capturable): the decay from the device count,
  // the update applied only when `apply` (f64 [1]) is 1, the count advanced by it. On a GPU the shadows move
  // exactly as update_from moves them (the same f64 product, rounded once); on the CPU, to a rounding.
  // sync_updates_to_host() reads the count back (before a checkpoint).
  void make_capturable();
  void update_from_if(const std::vector<nn::NamedTensor>& values, const Tensor& apply);
  void sync_updates_to_host();
  // The decay the next update will use.
  double next_decay() const;
  int64_t num_updates() const { return num_updates_; }
  const std::vector<nn::NamedTensor>& shadows() const { return shadows_; }

  // Copies the shadows into the parameters (rounded to their dtype), keeping the training weights aside; swap_out
  // restores them bit for bit. Updating while swapped in is an error.
  void swap_in();
  void swap_out();
  bool swapped_in() const { return !backup_.empty(); }

  // Checkpoint state: the shadows under the parameter names, and {decay, warmup, num_updates}.
  std::vector<nn::NamedTensor> state_tensors() const { return shadows_; }
  nlohmann::json state_json() const;
  // Validates names, shapes and dtypes against this EMA; errors name the mismatch.
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& scalars);

 private:
  std::vector<nn::NamedTensor> params_;
  std::vector<nn::NamedTensor> shadows_;
  std::map<std::string, size_t> index_;  // name -> position in shadows_
  // `values` in shadow order, checked against the shadows.
  std::vector<const Tensor*> match(const std::vector<nn::NamedTensor>& values) const;

  std::vector<Tensor> backup_;
  Tensor device_updates_, device_decay_;  // f64 [1] each, capturable mode only
  double decay_;
  bool warmup_;
  int64_t num_updates_ = 0;
};

// Swaps the EMA weights in for a scope (no-op for a null EMA).
class EmaSwapGuard {
 public:
  explicit EmaSwapGuard(Ema* ema) : ema_(ema) {
    if (ema_) ema_->swap_in();
  }
  ~EmaSwapGuard() {
    if (ema_) ema_->swap_out();
  }
  EmaSwapGuard(const EmaSwapGuard&) = delete;
  EmaSwapGuard& operator=(const EmaSwapGuard&) = delete;

 private:
  Ema* ema_;
};

}  // namespace dcae::trainer
