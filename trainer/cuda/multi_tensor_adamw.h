// The fused multi-tensor AdamW step on CUDA (trainer/optim/update_math.h calls it for GPU tensors), and its
// capturable form, whose launches can be recorded into a CUDA graph and replayed step after step.
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/optim/update_math.h"

namespace dcae::trainer::cuda {

// Updates every entry of `tensors` (validated by the caller: all on one GPU) with one kernel launch per master
// dtype. The per-tensor table (pointers, sizes, dtypes, hyperparameters) and the chunk list go to the device in one
// copy; each block updates one chunk of one tensor in the CPU kernel's operation order with explicit IEEE rounding
// (no FMA contraction), so results agree with adamw_update's on the CPU to the last bit or two (the CPU build may
// contract into FMAs).
void multi_tensor_adamw(const std::vector<AdamWTensors>& tensors);

// One tensor of a capturable AdamW step. Everything that changes from step to step lives in device memory, so
// the launches can be captured into a CUDA graph: the step count (`step`, one int64 on the device, advanced by the
// launch itself) and the group's learning rate (read from CapturableAdamWScalars::group_lrs).
struct CapturableAdamWTensor {
  Tensor master, grad, exp_avg, exp_avg_sq;  // as in AdamWTensors
  Tensor param;                              // undefined: no low-precision copy to refresh
  Tensor step;                               // int64, one element, on the device: updates received so far
  int32_t group = 0;                         // index into group_lrs
  double weight_decay = 0.0;                 // the group's (fixed for the optimizer's life)
};

struct CapturableAdamWScalars {
  const double* group_lrs = nullptr;  // device memory, one per group: the lr of this step (staged before it)
  // Device memory or null: the global gradient norm (one f32). A non-finite norm skips the whole step on the device
  // (nothing written, no step counted); a norm above max_norm scales every gradient by max_norm / (norm + 1e-6)
  // as it is loaded (torch's clip_grad_norm_ factor, without rounding the scaled gradient to its dtype).
  const float* grad_norm = nullptr;
  double max_norm = 0.0;  // <= 0: no clipping
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// The capturable step: no host->device copy and no host read. Tensor tables travel as kernel parameters (up to
// 256 tensors a launch; a CUDA graph stores them with the launch), and each block works out its scalars (bias
// corrections from the device step count, lr, clip factor) the way the host does for multi_tensor_adamw, so
// both forms give the same bits whenever CUDA's pow() rounds as the host's.
void multi_tensor_adamw_capturable(const std::vector<CapturableAdamWTensor>& tensors,
                                   const CapturableAdamWScalars& scalars);

}  // namespace dcae::trainer::cuda
