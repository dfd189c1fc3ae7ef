// Fused inference forms of DC-AE's residual patterns. Each equals the composition named beside it (up to one
// rounding fewer in bf16/f16: the sum is rounded once); on the GPU, when no input needs a gradient, it runs as one
// pass over the activations, otherwise (CPU, or autograd history needed) it is that composition, gradients included.
#pragma once
#include "core/tensor/tensor.h"
#include "ops/conv2d.h"
#include "ops/unary.h"

namespace dcae::ops {

// residual + rms_norm(x, weight, bias, eps)
Tensor add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias,
                    double eps = 1e-5);
// residual + batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, momentum, eps): BatchNorm
// on its running statistics, folded into a per-channel scale and shift.
Tensor add_batch_norm_eval(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias,
                           const Tensor& running_mean, const Tensor& running_var, double eps = 1e-5);

// unary(act, conv2d(x, weight, bias, params)) for act relu or silu. On the GPU without autograd, a cuDNN plan with
// the bias and the activation in its epilogue where one exists and is faster (timed on first use).
Tensor conv2d_activation(const Tensor& x, const Tensor& weight, const Tensor& bias, Conv2dParams params, UnaryOp act);

// pixel_shuffle(y, factor) + upsample_shortcut(x, out_channels, factor): DC-AE's up block (pixel-shuffle kind).
Tensor pixel_shuffle_with_shortcut(const Tensor& y, const Tensor& x, int64_t out_channels, int64_t factor);
// pixel_unshuffle(y, factor) + downsample_shortcut(x, out_channels, factor): DC-AE's down block (unshuffle kind).
Tensor pixel_unshuffle_with_shortcut(const Tensor& y, const Tensor& x, int64_t out_channels, int64_t factor);

}  // namespace dcae::ops
