#include "core/tensor/init.h"

#include <cmath>

namespace dcae::init {

Fans compute_fans(const Tensor& w) {
  DCAE_CHECK(w.dim() >= 2, "fan-in/fan-out need a weight of rank >= 2, got ", w.str());
  int64_t receptive = 1;
  for (int64_t d = 2; d < w.dim(); ++d) receptive *= w.size(d);
  return {w.size(1) * receptive, w.size(0) * receptive};
}

void kaiming_uniform_(Tensor& w, double gain, Generator& gen) {
  const double bound = gain * std::sqrt(3.0 / static_cast<double>(compute_fans(w).fan_in));
  uniform_(w, -bound, bound, gen);
}

void kaiming_normal_(Tensor& w, double gain, Generator& gen) {
  normal_(w, 0.0, gain / std::sqrt(static_cast<double>(compute_fans(w).fan_in)), gen);
}

void xavier_uniform_(Tensor& w, double gain, Generator& gen) {
  const Fans f = compute_fans(w);
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(f.fan_in + f.fan_out));
  uniform_(w, -bound, bound, gen);
}

void xavier_normal_(Tensor& w, double gain, Generator& gen) {
  const Fans f = compute_fans(w);
  normal_(w, 0.0, gain * std::sqrt(2.0 / static_cast<double>(f.fan_in + f.fan_out)), gen);
}

}  // namespace dcae::init
