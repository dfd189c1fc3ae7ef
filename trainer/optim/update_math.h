// The per-element optimizer updates, one function each, on contiguous CPU tensors with plain loops. They are the
// only place the update math lives, so a fused CUDA kernel can replace them one for one: AdamW on GPU tensors runs
// the fused multi-tensor kernel of trainer/cuda/multi_tensor_adamw.cu (same operation order and rounding).
#pragma once
#include <cstdint>
#include <vector>

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
// All on the CPU, or all on one GPU (then one fused kernel launch).
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                  const AdamWHyper& h);

// One tensor of a multi-tensor AdamW step: `master` (f32/f64) is updated as by adamw_update, with its own
// hyperparameters (lr, weight decay and step differ by group and parameter); `param`, when defined (the bf16/f16 or
// f32 model weight of the same shape, contiguous), receives the updated master rounded to its dtype.
struct AdamWTensors {
  Tensor master, grad, exp_avg, exp_avg_sq, param;
  AdamWHyper hyper;
};

// Every entry's update. GPU tensors (all on one device): one kernel launch per master dtype over the whole list;
// CPU tensors: adamw_update per entry, then the copy into param.
void adamw_update_many(const std::vector<AdamWTensors>& tensors);

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
