// Parameter initialisers (PyTorch's conventions for fan-in/fan-out of linear [out, in] and conv [out, in/g, kh, kw]).
#pragma once
#include "core/tensor/philox.h"

namespace dcae::init {

struct Fans {
  int64_t fan_in;
  int64_t fan_out;
};
Fans compute_fans(const Tensor& weight);

// gain for relu is sqrt(2); for linear/identity 1.
void kaiming_uniform_(Tensor& w, double gain = 1.4142135623730951, Generator& gen = default_generator());
void kaiming_normal_(Tensor& w, double gain = 1.4142135623730951, Generator& gen = default_generator());
void xavier_uniform_(Tensor& w, double gain = 1.0, Generator& gen = default_generator());
void xavier_normal_(Tensor& w, double gain = 1.0, Generator& gen = default_generator());

}  // namespace dcae::init
