#include "ops/norm.h"

#include <array>
#include <cmath>

#include "core/autograd/record.h"
#include "ops/cpu/norm.h"
#include "ops/dispatch.h"

namespace dcae::ops {

using autograd::Node;
using autograd::SavedTensor;

namespace {

std::string describe(const Tensor& t) { return t.defined() ? t.str() : std::string("undefined"); }

void check_input(const char* op, const Tensor& x, int64_t min_dims, const char* layout) {
  DCAE_CHECK(x.defined(), op, ": undefined input");
  DCAE_CHECK(is_floating(x.dtype()), op, " needs a floating input, got ", x.str());
  DCAE_CHECK(x.dim() >= min_dims, op, " needs x as ", layout, " (channels last), got ", x.str());
  DCAE_CHECK(x.size(-1) > 0, op, " over an empty channel dim: x is ", x.str());
}

// A per-channel tensor of x: [C] on x's device; weight and bias also have x's dtype, buffers any float dtype.
void check_per_channel(const char* op, const char* name, const Tensor& p, const Tensor& x, bool same_dtype) {
  if (!p.defined()) return;
  DCAE_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", name, " must be [", x.size(-1),
             "] (one per channel of x ", x.str(), "), got ", p.str());
  DCAE_CHECK(p.device() == x.device(), op, ": ", name, " ", p.str(), " is not on x's device (x ", x.str(), ")");
  if (same_dtype)
    DCAE_CHECK(p.dtype() == x.dtype(), op, ": ", name, " ", p.str(), " must have x's dtype (x ", x.str(), ")");
  else
    DCAE_CHECK(is_floating(p.dtype()), op, ": ", name, " must be floating, got ", p.str());
}

void check_affine(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_per_channel(op, "weight", weight, x, true);
  check_per_channel(op, "bias", bias, x, true);
  DCAE_CHECK(eps >= 0.0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
}

std::array<bool, 3> grad_mask(const Node& node) {
  return {node.needs_input_grad(0), node.needs_input_grad(1), node.needs_input_grad(2)};
}

bool wants_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

// Keeps t for backward only when a wanted gradient reads it. x feeds grad_x and grad_weight only; when it is not
// kept, the incoming gradient stands in for it (see ops/cpu/norm.h).
SavedTensor save_if(bool needed, const Tensor& x) { return needed ? SavedTensor(x) : SavedTensor(); }

Tensor row_norm(const char* op, bool center, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_input(op, x, 1, "[..., C]");
  check_affine(op, x, weight, bias, eps);
  Tensor mean, rstd;
  Tensor out = DCAE_KERNEL(x.device(), row_norm_forward, x, weight, bias, eps, center, mean, rstd);
  if (!autograd::needs_history({x, weight, bias})) return out;
  autograd::record(
      op, {x, weight, bias}, {out},
      [center, sx = save_if(wants_grad(x) || wants_grad(weight), x), sw = save_if(wants_grad(x), weight),
       smean = SavedTensor(mean), srstd = SavedTensor(rstd)](const std::vector<Tensor>& grads, const Node& node) {
        const Tensor& g = grads[0];
        const Tensor x = sx.defined() ? sx.get() : g;
        return DCAE_KERNEL(g.device(), row_norm_backward, g, x, sw.get(), smean.get(), srstd.get(), center,
                           grad_mask(node));
      });
  return out;
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return row_norm("rms_norm", /*center=*/false, x, weight, bias, eps);
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return row_norm("layer_norm", /*center=*/true, x, weight, bias, eps);
}

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps) {
  const char* op = "group_norm";
  check_input(op, x, 2, "[N, ..., C]");
  check_affine(op, x, weight, bias, eps);
  DCAE_CHECK(groups > 0 && x.size(-1) % groups == 0, op, ": groups (", groups, ") must be positive and divide the ",
             x.size(-1), " channels of x ", x.str());
  for (int64_t d = 1; d < x.dim(); ++d)
    DCAE_CHECK(x.size(d) > 0, op, ": every sample of x ", x.str(), " is empty (dim ", d, " has size 0)");
  Tensor mean, rstd;
  Tensor out = DCAE_KERNEL(x.device(), group_norm_forward, x, groups, weight, bias, eps, mean, rstd);
  if (!autograd::needs_history({x, weight, bias})) return out;
  autograd::record(
      op, {x, weight, bias}, {out},
      [groups, sx = save_if(wants_grad(x) || wants_grad(weight), x), sw = save_if(wants_grad(x), weight),
       smean = SavedTensor(mean), srstd = SavedTensor(rstd)](const std::vector<Tensor>& grads, const Node& node) {
        const Tensor& g = grads[0];
        const Tensor x = sx.defined() ? sx.get() : g;
        return DCAE_KERNEL(g.device(), group_norm_backward, g, x, groups, sw.get(), smean.get(), srstd.get(),
                           grad_mask(node));
      });
  return out;
}

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean, Tensor running_var,
                  bool training, double momentum, double eps) {
  const char* op = training ? "batch_norm (training)" : "batch_norm (eval)";
  check_input(op, x, 2, "[N, ..., C]");
  check_affine(op, x, weight, bias, eps);
  DCAE_CHECK(running_mean.defined() == running_var.defined(), op,
             ": give both running_mean and running_var or neither, got ", describe(running_mean), " and ",
             describe(running_var));
  DCAE_CHECK(training || running_mean.defined(), op, " normalizes with the running stats, but none were given");
  check_per_channel(op, "running_mean", running_mean, x, false);
  check_per_channel(op, "running_var", running_var, x, false);
  DCAE_CHECK(!wants_grad(running_mean) && !wants_grad(running_var), op,
             ": running stats are buffers and must not require grad, got ", describe(running_mean), " and ",
             describe(running_var));
  DCAE_CHECK(!training || x.numel() / x.size(-1) > 1, op, " needs more than one value per channel, got x ", x.str());
  DCAE_CHECK(momentum >= 0.0 && momentum <= 1.0, op, ": momentum must be in [0, 1], got ", momentum);
  Tensor mean, rstd;
  Tensor out = DCAE_KERNEL(x.device(), batch_norm_forward, x, weight, bias, running_mean, running_var, training,
                           momentum, eps, mean, rstd);
  if (!autograd::needs_history({x, weight, bias})) return out;
  // Eval grad_x (dy * w * rstd) does not read x, so eval keeps x only for grad_weight.
  const bool keep_x = wants_grad(weight) || (training && wants_grad(x));
  autograd::record(training ? "batch_norm" : "batch_norm_eval", {x, weight, bias}, {out},
                   [training, sx = save_if(keep_x, x), sw = save_if(wants_grad(x), weight), smean = SavedTensor(mean),
                    srstd = SavedTensor(rstd)](const std::vector<Tensor>& grads, const Node& node) {
                     const Tensor& g = grads[0];
                     const Tensor x = sx.defined() ? sx.get() : g;
                     return DCAE_KERNEL(g.device(), batch_norm_backward, g, x, sw.get(), smean.get(), srstd.get(),
                                        training, grad_mask(node));
                   });
  return out;
}

}  // namespace dcae::ops
