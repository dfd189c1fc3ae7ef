// CPU normalization kernels over channels-last tensors (channels = the last dim). Pure functions, no autograd.
// Statistics are accumulated in double; the saved mean/rstd are in the compute dtype (f64 for f64 inputs, else
// f32). Outputs and gradients come back in x's dtype. weight/bias may be undefined (scale 1 / shift 0).
#pragma once
#include <array>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// Which gradients a backward kernel produces: {input, weight, bias}. Entries not asked for come back undefined.
// Backward kernels read x only for grad_weight and for grad_x (except eval BatchNorm, whose grad_x is dy * w * rstd);
// when neither is asked for, any tensor of x's shape and dtype (e.g. the gradient) may stand in for x.
using NormGradMask = std::array<bool, 3>;

// Per row (all dims but the last), over the last dim: center=true is LayerNorm, center=false is RMSNorm (no mean
// subtraction; `mean` is left undefined). mean and rstd get shape [rows].
Tensor row_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool center,
                        Tensor& mean, Tensor& rstd);
// {grad_x, grad_weight, grad_bias} from the mean/rstd saved by row_norm_forward (mean undefined when !center).
std::vector<Tensor> row_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                      const Tensor& rstd, bool center, NormGradMask needs);

// x [N, ..., C]: statistics per (sample, group of C/groups consecutive channels) over every position of the sample;
// mean and rstd get shape [N, groups].
Tensor group_norm_forward(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps,
                          Tensor& mean, Tensor& rstd);
std::vector<Tensor> group_norm_backward(const Tensor& grad, const Tensor& x, int64_t groups, const Tensor& weight,
                                        const Tensor& mean, const Tensor& rstd, NormGradMask needs);

// Per channel over every other dim. training: batch statistics (biased variance) become mean/rstd [C], and the
// running stats, when defined, are updated in place (running = (1-momentum)*running + momentum*batch, with the
// unbiased variance). Eval: mean/rstd [C] are computed from (copies of) the running stats, which stay untouched.
Tensor batch_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                          Tensor running_var, bool training, double momentum, double eps, Tensor& mean, Tensor& rstd);
// training: the statistics depend on x (full BatchNorm gradient); eval: they are constants (a per-channel affine).
std::vector<Tensor> batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                        const Tensor& rstd, bool training, NormGradMask needs);

}  // namespace dcae::ops::cpu
