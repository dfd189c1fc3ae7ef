#include "ops/conv2d.h"

#include "core/autograd/record.h"
#include "ops/cpu/conv2d.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"

namespace dcae::ops {

using autograd::Node;
using autograd::SavedTensor;

namespace {

void check_conv2d_args(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
  DCAE_CHECK(x.defined() && weight.defined(), "conv2d: undefined input (", x.str(), ") or weight (", weight.str(),
             ")");
  DCAE_CHECK(x.dim() == 4, "conv2d: input must be NHWC [N, H, W, Cin], got ", x.str());
  DCAE_CHECK(weight.dim() == 4, "conv2d: weight must be [Cout, Cin/groups, kh, kw], got ", weight.str());
  DCAE_CHECK(is_floating(x.dtype()), "conv2d needs a floating input, got ", x.str());
  DCAE_CHECK(x.dtype() == weight.dtype() && x.device() == weight.device(), "conv2d: input ", x.str(),
             " and weight ", weight.str(), " differ in dtype or device");
  DCAE_CHECK(p.stride >= 1 && p.padding >= 0 && p.groups >= 1,
             "conv2d: needs stride >= 1, padding >= 0, groups >= 1; got stride ", p.stride, ", padding ", p.padding,
             ", groups ", p.groups);
  const int64_t cin = x.size(3), cout = weight.size(0);
  DCAE_CHECK(cin % p.groups == 0 && cout % p.groups == 0, "conv2d: groups ", p.groups,
             " must divide input channels (", x.str(), ") and output channels (weight ", weight.str(), ")");
  DCAE_CHECK(weight.size(1) * p.groups == cin, "conv2d: weight ", weight.str(), " expects ",
             weight.size(1) * p.groups, " input channels with groups ", p.groups, ", but input ", x.str(), " has ",
             cin);
  DCAE_CHECK(weight.size(2) >= 1 && weight.size(3) >= 1, "conv2d: empty kernel in weight ", weight.str());
  DCAE_CHECK(x.size(1) + 2 * p.padding >= weight.size(2) && x.size(2) + 2 * p.padding >= weight.size(3),
             "conv2d: kernel of weight ", weight.str(), " is larger than input ", x.str(), " padded by ", p.padding);
  if (bias.defined()) {
    DCAE_CHECK(bias.dim() == 1 && bias.size(0) == cout, "conv2d: bias ", bias.str(), " must be [", cout,
               "] for weight ", weight.str());
    DCAE_CHECK(bias.dtype() == x.dtype() && bias.device() == x.device(), "conv2d: bias ", bias.str(),
               " must match input ", x.str(), " in dtype and device");
  }
}

}  // namespace

int64_t conv2d_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding) {
  return (in + 2 * padding - kernel) / stride + 1;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Conv2dParams params) {
  check_conv2d_args(x, weight, bias, params);
  Tensor out = DCAE_KERNEL(x.device(), conv2d_forward, x, weight, bias, params);
  if (!autograd::needs_history({x, weight, bias})) return out;
  // The input gradient reads only the weight and the weight gradient only the input.
  const bool x_wants = autograd::needs_history({x}), weight_wants = autograd::needs_history({weight});
  autograd::record("conv2d", {x, weight, bias}, {out},
                   [sx = weight_wants ? SavedTensor(x) : SavedTensor(),
                    sw = x_wants ? SavedTensor(weight) : SavedTensor(), params, x_shape = x.shape(),
                    weight_shape = weight.shape()](const std::vector<Tensor>& grads, const Node& node) {
                     const Tensor& g = grads[0];
                     Tensor gx, gw, gb;
                     if (node.needs_input_grad(0))
                       gx = DCAE_KERNEL(g.device(), conv2d_backward_input, g, sw.get(), x_shape, params);
                     if (node.needs_input_grad(1))
                       gw = DCAE_KERNEL(g.device(), conv2d_backward_weight, g, sx.get(), weight_shape, params);
                     if (node.needs_input_grad(2)) gb = sum(g, {0, 1, 2});
                     return std::vector<Tensor>{gx, gw, gb};
                   });
  return out;
}

}  // namespace dcae::ops
