#include "trainer/device_step_stats.h"

#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/view.h"

namespace dcae::trainer {

namespace {
Tensor scalar_on(double value, Device device) { return full({1}, value, DType::f64, device); }
}  // namespace

DeviceStepStats::DeviceStepStats(std::vector<std::string> names, Device device, int64_t steps_done, int64_t in_a_row,
                                 int64_t max_in_a_row)
    : names_(std::move(names)), max_in_a_row_(static_cast<double>(max_in_a_row)) {
  DCAE_CHECK(!names_.empty(), "DeviceStepStats: no value to record");
  DCAE_CHECK(max_in_a_row >= 1, "DeviceStepStats: max_in_a_row must be >= 1, got ", max_in_a_row);
  zero_ = scalar_on(0.0, device);
  one_ = scalar_on(1.0, device);
  sums_ = zeros({static_cast<int64_t>(names_.size())}, DType::f64, device);
  step_number_ = scalar_on(static_cast<double>(steps_done), device);
  skipped_ = scalar_on(0.0, device);
  in_a_row_ = scalar_on(static_cast<double>(in_a_row), device);
  limit_step_ = scalar_on(0.0, device);
  last_skipped_ = scalar_on(0.0, device);
  last_norm_ = zeros({1}, DType::f32, device);
  last_applied_ = scalar_on(1.0, device);
}

Tensor DeviceStepStats::record(const std::vector<Tensor>& values, const Tensor& grad_norm, const Tensor& gated_norm) {
  DCAE_CHECK(values.size() == names_.size(), "DeviceStepStats::record: ", values.size(), " values for ",
             names_.size(), " names");
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> flat;
  for (size_t i = 0; i < values.size(); ++i) {
    DCAE_CHECK(values[i].numel() == 1 && values[i].dtype() == DType::f64 && values[i].device() == sums_.device(),
               "DeviceStepStats::record: '", names_[i], "' must be one f64 on ", sums_.device(), ", got ",
               values[i].str());
    flat.push_back(ops::reshape(values[i].detach(), {1}));
  }
  sums_.add_(ops::concat(flat, 0));
  // x * 0 is 0 for finite x and NaN for NaN or Inf: a finiteness test with plain arithmetic.
  const Tensor applied = ops::equal(ops::mul(ops::cast(ops::reshape(gated_norm.detach(), {1}), DType::f64), 0.0), zero_);
  const Tensor skipped = ops::rsub(1.0, applied);
  step_number_.add_(one_);
  skipped_.add_(skipped);
  in_a_row_.copy_(ops::mul(ops::add(in_a_row_, 1.0), skipped));
  // The first step whose skip reaches the limit (the eager tracker throws there).
  const Tensor first_hit = ops::mul(ops::greater_equal(in_a_row_, ops::add(zero_, max_in_a_row_)), ops::equal(limit_step_, zero_));
  limit_step_.add_(ops::mul(first_hit, step_number_));
  last_skipped_.add_(ops::mul(skipped, ops::sub(step_number_, last_skipped_)));
  last_norm_.copy_(ops::reshape(grad_norm.detach(), {1}));
  last_applied_.copy_(applied);
  return applied;
}

DeviceStepStats::Window DeviceStepStats::take_window() {
  autograd::NoGradGuard no_grad;
  const Tensor host = ops::concat({sums_, ops::cast(last_norm_, DType::f64), last_applied_}, 0).to(Device::cpu());
  const double* v = host.data<double>();
  Window window;
  for (size_t i = 0; i < names_.size(); ++i) window.sums.emplace_back(names_[i], v[i]);
  window.last_grad_norm = v[names_.size()];
  window.last_skipped = v[names_.size() + 1] == 0.0;
  sums_.zero_();
  return window;
}

DeviceStepStats::NonFinite DeviceStepStats::take_nonfinite() {
  autograd::NoGradGuard no_grad;
  const Tensor host = ops::concat({skipped_, last_skipped_, in_a_row_, limit_step_}, 0).to(Device::cpu());
  const double* v = host.data<double>();
  NonFinite out;
  out.skipped = static_cast<int64_t>(v[0]);
  out.last_skipped = static_cast<int64_t>(v[1]);
  out.in_a_row = static_cast<int64_t>(v[2]);
  out.limit_step = static_cast<int64_t>(v[3]);
  skipped_.zero_();
  return out;
}

}  // namespace dcae::trainer
