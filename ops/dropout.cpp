#include "ops/dropout.h"

#include "core/autograd/record.h"
#include "ops/elementwise.h"

namespace dcae::ops {

namespace {

// x * keep_mask * scale with one rounding for bf16/f16: the mask product is exact, the scale rounds once.
Tensor apply_mask(const Tensor& x, const Tensor& keep_mask, double scale) {
  return mul(mul(x, keep_mask.to(x.dtype())), scale);
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  DCAE_CHECK(x.defined(), "dropout: undefined input");
  DCAE_CHECK(is_floating(x.dtype()), "dropout needs a floating tensor, got ", x.str());
  DCAE_CHECK(p >= 0.0 && p <= 1.0, "dropout probability must be in [0, 1], got ", p, " for ", x.str());
  if (!training || p == 0.0) return x;
  Tensor keep_mask = empty(x.shape(), DType::u8, x.device());
  bernoulli_(keep_mask, 1.0 - p, gen);
  const double scale = p == 1.0 ? 0.0 : 1.0 / (1.0 - p);
  // The arithmetic runs on a history-free alias; the node below keeps only the u8 mask (not x) for backward.
  Tensor out = apply_mask(x.detach(), keep_mask, scale);
  if (!autograd::needs_history({x})) return out;
  autograd::record(
      "dropout", {x}, {out},
      [smask = autograd::SavedTensor(keep_mask), scale](const std::vector<Tensor>& grads, const autograd::Node&) {
        return std::vector<Tensor>{apply_mask(grads[0], smask.get(), scale)};
      });
  return out;
}

}  // namespace dcae::ops
