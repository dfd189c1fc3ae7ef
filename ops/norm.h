// Normalizations over channels-last activations (NHWC: channels are the last dim). Statistics are computed in at
// least fp32 (double on the CPU) and the output has x's dtype. weight and bias are per channel, shape [C], with x's
// dtype and device; an undefined weight means scale 1, an undefined bias means shift 0. Each op runs one fused
// forward kernel and one fused backward kernel that reuses the statistics saved by the forward.
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::ops {

// DC-AE's "trms2d": per position, over the last dim C, y = x / sqrt(mean_c(x^2) + eps) * w + b. RMSNorm with a
// bias and no mean subtraction.
Tensor rms_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);

// LayerNorm over the last dim: y = (x - mean_c(x)) / sqrt(var_c(x) + eps) * w + b (biased variance).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);

// GroupNorm on x [N, ..., C] (e.g. NHWC): statistics per (sample, group of C/groups consecutive channels) over every
// position of the sample (biased variance); the affine is per channel. groups must divide C.
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps = 1e-5);

// BatchNorm on x [..., C] (e.g. NHWC), per channel over every other dim, with PyTorch semantics.
// training: normalizes with the batch statistics (biased variance) and, when the running stats are defined,
//   updates them in place, outside autograd: running_mean = (1-momentum)*running_mean + momentum*batch_mean,
//   running_var likewise with the UNBIASED batch variance. Needs more than one value per channel.
// eval: normalizes with running_mean/running_var (required), which are read, not modified.
// Gradients flow to x, weight and bias in both modes (in eval the op is a per-channel affine of x). The running
// stats are buffers: [C], floating (any float dtype, e.g. f32 under bf16 activations), on x's device, no grad.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean, Tensor running_var,
                  bool training, double momentum = 0.1, double eps = 1e-5);

}  // namespace dcae::ops
