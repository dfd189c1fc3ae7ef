// The fused multi-tensor AdamW step on CUDA (trainer/optim/update_math.h calls it for GPU tensors).
#pragma once
#include <vector>

#include "trainer/optim/update_math.h"

namespace dcae::trainer::cuda {

// Updates every entry of `tensors` (validated by the caller: all on one GPU) with one kernel launch per master
// dtype. The per-tensor table (pointers, sizes, dtypes, hyperparameters) and the chunk list go to the device in one
// copy; each block updates one chunk of one tensor in the CPU kernel's operation order with explicit IEEE rounding
// (no FMA contraction), so results agree with adamw_update's on the CPU to the last bit or two (the CPU build may
// contract into FMAs).
void multi_tensor_adamw(const std::vector<AdamWTensors>& tensors);

}  // namespace dcae::trainer::cuda
