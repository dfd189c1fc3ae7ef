// Philox random fills of GPU tensors: the same numbers as the CPU's uniform_/normal_/bernoulli_ for the same
// generator state (element i from counter offset + i/4, lane i%4), and the generator advances identically.
#pragma once
#include "core/tensor/philox.h"

namespace dcae::cuda {

void uniform_(Tensor& t, double low, double high, Generator& gen);
void normal_(Tensor& t, double mean, double std, Generator& gen);
// Matches the CPU to ~1e-15 (it goes through erf/exp/log, whose last bits differ between libraries).
void trunc_normal_(Tensor& t, double mean, double std, double low, double high, Generator& gen);
void bernoulli_(Tensor& t, double keep, Generator& gen);

}  // namespace dcae::cuda
