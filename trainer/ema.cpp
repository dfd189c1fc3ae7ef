#include "trainer/ema.h"

#include <algorithm>

#include "core/autograd/grad_mode.h"
#include "ops/cpu/cpu_util.h"
#include "ops/elementwise.h"
#include "ops/view.h"

namespace dcae::trainer {

Ema::Ema(std::vector<nn::NamedTensor> params, double decay, bool warmup)
    : params_(std::move(params)), decay_(decay), warmup_(warmup) {
  DCAE_CHECK(decay >= 0.0 && decay < 1.0, "EMA decay must lie in [0, 1), got ", decay);
  for (const auto& [name, p] : params_) {
    DCAE_CHECK(is_floating(p.dtype()), "EMA: parameter '", name, "' is ", p.str(), ", not floating point");
    const DType shadow_dtype = p.dtype() == DType::f64 ? DType::f64 : DType::f32;
    DCAE_CHECK(index_.emplace(name, shadows_.size()).second, "EMA: parameter '", name, "' given twice");
    // Shadows live where the parameter lives, so a GPU run never moves weights to the host to average them.
    shadows_.emplace_back(name, p.detach().to(shadow_dtype).clone());
  }
}

double Ema::next_decay() const {
  if (!warmup_) return decay_;
  const double s = static_cast<double>(num_updates_);
  return std::min(decay_, (1.0 + s) / (10.0 + s));
}

void Ema::update() { update_from(params_); }

std::vector<const Tensor*> Ema::match(const std::vector<nn::NamedTensor>& values) const {
  DCAE_CHECK(!swapped_in(), "EMA update while the EMA weights are swapped into the model");
  DCAE_CHECK(values.size() == shadows_.size(), "EMA update with ", values.size(), " tensors, the EMA tracks ",
             shadows_.size());
  // Match by name: callers pass the model's order or the optimizer's (group by group).
  std::vector<const Tensor*> ordered(shadows_.size(), nullptr);
  for (const auto& [name, value] : values) {
    auto it = index_.find(name);
    DCAE_CHECK(it != index_.end(), "EMA update: '", name, "' is not a tensor this EMA tracks");
    const Tensor& shadow = shadows_[it->second].second;
    DCAE_CHECK(value.shape() == shadow.shape(), "EMA update: '", name, "' is ", value.str(), ", the EMA holds ",
               shadow.str());
    ordered[it->second] = &value;
  }
  for (size_t i = 0; i < shadows_.size(); ++i)
    DCAE_CHECK(ordered[i] != nullptr, "EMA update: no value for '", shadows_[i].first, "'");
  return ordered;
}

void Ema::make_capturable() {
  DCAE_CHECK(!shadows_.empty(), "Ema::make_capturable: the EMA tracks no tensor");
  const Device device = shadows_.front().second.device();
  device_updates_ = full({1}, static_cast<double>(num_updates_), DType::f64, device);
  device_decay_ = full({1}, decay_, DType::f64, device);
}

void Ema::update_from_if(const std::vector<nn::NamedTensor>& values, const Tensor& apply) {
  DCAE_CHECK(device_updates_.defined(), "Ema::update_from_if: call make_capturable first");
  DCAE_CHECK(apply.numel() == 1 && apply.dtype() == DType::f64 && apply.device() == device_updates_.device(),
             "Ema::update_from_if: `apply` must be one f64 on ", device_updates_.device(), ", got ", apply.str());
  const std::vector<const Tensor*> ordered = match(values);
  autograd::NoGradGuard no_grad;
  // next_decay() on the device: min(decay, (1 + s) / (10 + s)) during warmup.
  const Tensor decay = warmup_ ? ops::minimum(device_decay_, ops::div(ops::add(device_updates_, 1.0),
                                                                       ops::add(device_updates_, 10.0)))
                               : device_decay_;
  const Tensor weight = ops::mul(ops::rsub(1.0, decay), ops::reshape(apply, {1}));  // 1 - d, or 0 when skipped
  for (size_t i = 0; i < shadows_.size(); ++i) {
    Tensor shadow = shadows_[i].second;
    const Tensor value = ordered[i]->detach().to(shadow.device()).to(shadow.dtype());
    // shadow += (1 - d) * (value - shadow) with the product in f64, rounded once: update_from's add_ exactly.
    shadow.add_(ops::mul(ops::cast(ops::sub(value, shadow), DType::f64), weight));
  }
  device_updates_.add_(ops::reshape(apply, {1}));
}

void Ema::sync_updates_to_host() {
  if (device_updates_.defined()) num_updates_ = static_cast<int64_t>(device_updates_.item<double>());
}

void Ema::update_from(const std::vector<nn::NamedTensor>& values) {
  const std::vector<const Tensor*> ordered = match(values);
  const double d = next_decay();
  for (size_t i = 0; i < shadows_.size(); ++i) {
    const Tensor& shadow = shadows_[i].second;
    if (!shadow.device().is_cpu()) {
      autograd::NoGradGuard no_grad;
      const Tensor value = ordered[i]->detach().to(shadow.device()).to(shadow.dtype());
      Tensor(shadow).add_(ops::sub(value, shadow), 1.0 - d);  // lerp toward the weight, on the device
      continue;
    }
    const Tensor value = ordered[i]->detach().to(Device::cpu()).to(shadow.dtype()).contiguous();
    ops::cpu::visit_float(shadow.dtype(), "EMA update", [&]<typename T>() {
      T* s = shadow.data<T>();
      const T* v = value.data<const T>();
      const T weight = static_cast<T>(1.0 - d);
      ops::cpu::parallel_for(shadow.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) s[j] += weight * (v[j] - s[j]);  // lerp toward the weight
      });
    });
    shadow.bump_version();
  }
  ++num_updates_;
}

void Ema::swap_in() {
  DCAE_CHECK(!swapped_in(), "EMA weights are already swapped in");
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor param = params_[i].second;
    backup_.push_back(param.detach().clone());
    param.copy_(shadows_[i].second);
  }
}

void Ema::swap_out() {
  DCAE_CHECK(swapped_in(), "EMA swap_out without swap_in");
  for (size_t i = 0; i < params_.size(); ++i) Tensor(params_[i].second).copy_(backup_[i]);
  backup_.clear();
}

nlohmann::json Ema::state_json() const {
  return {{"decay", decay_}, {"warmup", warmup_}, {"num_updates", num_updates_}};
}

void Ema::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& scalars) {
  for (const auto& [name, shadow] : shadows_) {
    auto it = tensors.find(name);
    DCAE_CHECK(it != tensors.end(), "EMA state has no tensor '", name, "'");
    DCAE_CHECK(it->second.shape() == shadow.shape() && it->second.dtype() == shadow.dtype(), "EMA state tensor '",
               name, "' is ", it->second.str(), ", expected ", shadow.str());
  }
  DCAE_CHECK(tensors.size() == shadows_.size(), "EMA state has ", tensors.size(), " tensors, this EMA tracks ",
             shadows_.size(), " (did train.trainable change?)");
  for (const auto& [name, shadow] : shadows_) Tensor(shadow).copy_(tensors.at(name));
  num_updates_ = scalars.at("num_updates").get<int64_t>();
  if (device_updates_.defined()) device_updates_.fill_(static_cast<double>(num_updates_));
}

}  // namespace dcae::trainer
