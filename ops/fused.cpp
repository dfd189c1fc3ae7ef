#include "ops/fused.h"

#include "core/autograd/record.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "ops/spatial.h"
#include "ops/unary.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/conv2d.h"
#include "ops/cuda/fused_resample.h"
#include "ops/cuda/fused_residual.h"
#endif

namespace dcae::ops {

namespace {

#ifdef DCAE_WITH_CUDA
// The one-pass kernels serve GPU tensors that need no autograd history.
bool fused_path(const Tensor& residual, const std::vector<Tensor>& inputs) {
  return residual.device().is_cuda() && !autograd::needs_history(inputs);
}
#endif

void check_residual(const char* op, const Tensor& residual, const Tensor& x) {
  DCAE_CHECK(residual.defined() && x.defined(), op, ": residual and x must be defined");
  DCAE_CHECK(residual.shape() == x.shape() && residual.dtype() == x.dtype() && residual.device() == x.device(), op,
             ": residual ", residual.str(), " must have the shape, dtype and device of x ", x.str());
}

#ifdef DCAE_WITH_CUDA
// An optional per-channel parameter: [C] of x's dtype and device.
void check_channel_param(const char* op, const char* name, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  DCAE_CHECK(x.dim() >= 1 && p.dim() == 1 && p.size(0) == x.size(-1) && p.dtype() == x.dtype() &&
                 p.device() == x.device(),
             op, ": ", name, " ", p.str(), " must be [C] with the dtype and device of x ", x.str());
}
#endif

}  // namespace

Tensor add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_residual("add_rms_norm", residual, x);
#ifdef DCAE_WITH_CUDA
  if (fused_path(residual, {residual, x, weight, bias})) {
    check_channel_param("add_rms_norm", "weight", weight, x);
    check_channel_param("add_rms_norm", "bias", bias, x);
    return cuda::add_rms_norm_forward(residual, x, weight, bias, eps);
  }
#endif
  return add(residual, rms_norm(x, weight, bias, eps));
}

Tensor add_batch_norm_eval(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias,
                           const Tensor& running_mean, const Tensor& running_var, double eps) {
  check_residual("add_batch_norm_eval", residual, x);
#ifdef DCAE_WITH_CUDA
  if (fused_path(residual, {residual, x, weight, bias, running_mean, running_var})) {
    // scale = weight / sqrt(var + eps), shift = bias - mean * scale, per channel in fp32 (f64 for f64).
    const DType stat = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
    Tensor scale = rsqrt(add(running_var.to(stat), eps));
    if (weight.defined()) scale = mul(scale, weight.to(stat));
    Tensor shift = neg(mul(running_mean.to(stat), scale));
    if (bias.defined()) shift = add(shift, bias.to(stat));
    return cuda::residual_channel_affine(residual, x, scale, shift);
  }
#endif
  return add(residual, batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, 0.1, eps));
}

Tensor conv2d_activation(const Tensor& x, const Tensor& weight, const Tensor& bias, Conv2dParams params,
                         UnaryOp act) {
  DCAE_CHECK(act == UnaryOp::relu || act == UnaryOp::silu, "conv2d_activation: the activation must be relu or silu");
#ifdef DCAE_WITH_CUDA
  if (x.device().is_cuda() && bias.defined() && !autograd::needs_history({x, weight, bias})) {
    DCAE_CHECK(weight.dtype() == x.dtype() && bias.dtype() == x.dtype() && weight.device() == x.device() &&
                   bias.device() == x.device() && weight.dim() == 4 && x.dim() == 4 && bias.dim() == 1 &&
                   bias.size(0) == weight.size(0),
               "conv2d_activation: x ", x.str(), ", weight ", weight.str(), " and bias ", bias.str(),
               " must be NHWC, [Cout, Cin/g, kh, kw] and [Cout] of one dtype and device");
    const Tensor fused = cuda::conv2d_forward_bias_activation(
        x, weight, bias, params, act == UnaryOp::relu ? cuda::ConvActivation::relu : cuda::ConvActivation::silu);
    if (fused.defined()) return fused;
  }
#endif
  return unary(act, conv2d(x, weight, bias, params));
}

Tensor pixel_shuffle_with_shortcut(const Tensor& y, const Tensor& x, int64_t out_channels, int64_t factor) {
#ifdef DCAE_WITH_CUDA
  if (y.device().is_cuda() && !autograd::needs_history({y, x}))
    return cuda::pixel_shuffle_add_shortcut(y, x, out_channels, factor);
#endif
  return add(pixel_shuffle(y, factor), upsample_shortcut(x, out_channels, factor));
}

Tensor pixel_unshuffle_with_shortcut(const Tensor& y, const Tensor& x, int64_t out_channels, int64_t factor) {
#ifdef DCAE_WITH_CUDA
  if (y.device().is_cuda() && !autograd::needs_history({y, x}))
    return cuda::pixel_unshuffle_add_shortcut(y, x, out_channels, factor);
#endif
  return add(pixel_unshuffle(y, factor), downsample_shortcut(x, out_channels, factor));
}

}  // namespace dcae::ops
