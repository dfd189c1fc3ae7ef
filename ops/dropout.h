// Inverted dropout with a Philox keep-mask.
#pragma once
#include "core/tensor/philox.h"
#include "core/tensor/tensor.h"

namespace dcae::ops {

// training and p > 0: out = x * mask / (1 - p) with mask ~ Bernoulli(1 - p) drawn from `gen` (so the same seed and
// offset give the same mask on any thread count); backward multiplies by the same mask and scale. p == 1 zeros
// everything. Eval mode or p == 0 returns x itself and draws nothing. p must be in [0, 1].
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen = default_generator());

}  // namespace dcae::ops
