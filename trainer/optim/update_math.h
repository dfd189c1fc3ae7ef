// The per-element optimizer updates, one function each, on contiguous CPU tensors with plain loops. They are the
// only place the update math lives, so a fused CUDA kernel can replace them one for one.
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::trainer {

struct AdamWHyper {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;  // 1-based count including this update (bias correction)
};

// PyTorch's AdamW (decoupled weight decay, bias correction), in the order torch.optim.AdamW applies it:
//   p *= 1 - lr*wd;  m += (1-b1)(g - m);  v = b2 v + (1-b2) g^2;
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// param, exp_avg, exp_avg_sq: same shape and dtype (f32 or f64), contiguous. grad: any float dtype, contiguous.
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                  const AdamWHyper& h);

struct SgdHyper {
  double lr = 1e-2;
  double momentum = 0.0;
  double weight_decay = 0.0;  // coupled (added to the gradient), as in torch.optim.SGD
  bool nesterov = false;
  bool first_step = false;  // the momentum buffer starts as the first gradient
};

// PyTorch's SGD: d = g + wd p;  buf = first ? d : momentum buf + d;  d = nesterov ? d + momentum buf : buf;
// p -= lr d. momentum_buffer is unused (may be undefined) when momentum is 0.
void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdHyper& h);

}  // namespace dcae::trainer
