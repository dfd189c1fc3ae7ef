#include "trainer/optim/clip.h"

#include <glog/logging.h>

#include <cmath>

#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::trainer {

namespace {

// Calls fn(pointer, n) with T the gradient's element type, on a contiguous CPU gradient.
template <typename Fn>
void visit_grad(const Tensor& grad, const char* op, Fn&& fn) {
  DCAE_CHECK(grad.device().is_cpu(), op, ": gradient ", grad.str(), " is not on the CPU (device gradients take the ops path)");
  DCAE_CHECK(grad.is_contiguous(), op, ": gradient ", grad.str(), " is not contiguous");
  visit_dtype(grad.dtype(), [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T> || std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
      fn(grad.data<T>(), grad.numel());
    } else {
      DCAE_FAIL(op, ": gradient ", grad.str(), " is not floating point");
    }
  });
}

}  // namespace

// Sum of squares of device gradients as one f32 on their device (per-gradient f32 partial sums, then their sum).
static Tensor device_sum_of_squares_tensor(const std::vector<Tensor>& grads) {
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> partial;
  for (const Tensor& g : grads) partial.push_back(ops::reshape(ops::sum(ops::square(ops::cast(g, DType::f32))), {1}));
  return ops::sum(ops::concat(partial, 0));
}

// The same reduced on the device with one host read at the end.
static double device_sum_of_squares(const std::vector<Tensor>& grads) {
  if (grads.empty()) return 0.0;
  return device_sum_of_squares_tensor(grads).item<double>();
}

Tensor grad_norm_tensor(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    const Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    DCAE_CHECK(!grad.device().is_cpu(), "grad_norm_tensor: gradient ", grad.str(), " is on the CPU (use grad_norm)");
    DCAE_CHECK(grads.empty() || grad.device() == grads.front().device(), "grad_norm_tensor: gradients on ",
               grads.front().device(), " and ", grad.device());
    grads.push_back(grad);
  }
  DCAE_CHECK(!grads.empty(), "grad_norm_tensor: no parameter has a gradient");
  autograd::NoGradGuard no_grad;
  return ops::reshape(ops::sqrt(device_sum_of_squares_tensor(grads)), {1});
}

double grad_norm(const std::vector<Tensor>& params) {
  double sum_sq = 0.0;
  std::vector<Tensor> on_device;
  for (const Tensor& p : params) {
    const Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    if (!grad.device().is_cpu()) {
      on_device.push_back(grad);
      continue;
    }
    visit_grad(grad.contiguous(), "grad_norm", [&]<typename T>(T* g, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const double x = to_double(g[i]);
        sum_sq += x * x;
      }
    });
  }
  return std::sqrt(sum_sq + device_sum_of_squares(on_device));
}

namespace {
void scale_in_place(Tensor t, double factor) {
  visit_grad(t, "scale_grads", [&]<typename T>(T* g, int64_t n) {
    for (int64_t i = 0; i < n; ++i) g[i] = from_double<T>(to_double(g[i]) * factor);
  });
  t.bump_version();
}
}  // namespace

void scale_grads(const std::vector<Tensor>& params, double factor) {
  for (const Tensor& p : params) {
    Tensor grad = p.grad();
    if (!grad.defined()) continue;
    if (!grad.device().is_cpu()) {
      autograd::NoGradGuard no_grad;
      grad.copy_(ops::mul(grad, factor));
    } else if (grad.is_contiguous()) {
      scale_in_place(grad, factor);
    } else {  // rare: scale a packed copy and write it back
      Tensor packed = grad.contiguous();
      scale_in_place(packed, factor);
      grad.copy_(packed);
    }
  }
}

GradNorm clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  GradNorm out;
  out.norm = grad_norm(params);
  out.finite = std::isfinite(out.norm);
  if (max_norm > 0.0 && out.finite && out.norm > max_norm) {
    scale_grads(params, max_norm / (out.norm + 1e-6));
    out.clipped = true;
  }
  return out;
}

NonFiniteTracker::NonFiniteTracker(int64_t max_in_a_row) : max_in_a_row_(max_in_a_row) {
  DCAE_CHECK(max_in_a_row >= 1, "max_nonfinite_steps must be >= 1, got ", max_in_a_row);
}

bool NonFiniteTracker::skip(bool finite, int64_t step) {
  if (finite) {
    in_a_row_ = 0;
    return false;
  }
  ++in_a_row_;
  ++total_;
  DCAE_CHECK(in_a_row_ < max_in_a_row_, "stopping at step ", step, ": ", in_a_row_,
             " non-finite steps in a row (loss or gradient NaN/Inf; train.max_nonfinite_steps = ", max_in_a_row_, ")");
  LOG(WARNING) << "step " << step << ": non-finite loss or gradient, update skipped (" << in_a_row_ << " in a row, "
               << total_ << " in all)";
  return true;
}

void NonFiniteTracker::account_device_steps(int64_t skipped, int64_t last_skipped, int64_t in_a_row,
                                            int64_t limit_step) {
  DCAE_CHECK(skipped >= 0 && in_a_row >= 0, "non-finite step counts from the device must be >= 0, got ", skipped,
             " skipped and ", in_a_row, " in a row");
  total_ += skipped;
  in_a_row_ = in_a_row;
  DCAE_CHECK(limit_step <= 0, "stopping at step ", limit_step, ": ", max_in_a_row_,
             " non-finite steps in a row (loss or gradient NaN/Inf; train.max_nonfinite_steps = ", max_in_a_row_,
             "; noticed at a log step of the CUDA graph)");
  if (skipped > 0)
    LOG(WARNING) << skipped << " step(s) with a non-finite loss or gradient skipped on the GPU (the last at step "
                 << last_skipped << "; " << in_a_row_ << " in a row now, " << total_ << " in all)";
}

}  // namespace dcae::trainer
