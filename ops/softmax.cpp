#include "ops/softmax.h"

#include "core/autograd/record.h"
#include "ops/cpu/softmax.h"
#include "ops/dispatch.h"

namespace dcae::ops {

namespace {

Tensor softmax_impl(const Tensor& x, int64_t dim_in, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  DCAE_CHECK(x.defined(), name, ": undefined input");
  DCAE_CHECK(is_floating(x.dtype()), name, " needs a floating tensor, got ", x.str());
  DCAE_CHECK(x.dim() > 0, name, " needs a tensor with at least one dim, got ", x.str());
  const int64_t dim = normalize_dim(dim_in, x.dim());
  Tensor out = DCAE_KERNEL(x.device(), softmax_forward, x, dim, log);
  if (!autograd::needs_history({x})) return out;
  // Both backwards are functions of the output alone, so the input is not kept.
  autograd::record(
      name, {x}, {out},
      [dim, log, saved_out = autograd::SavedTensor(out)](const std::vector<Tensor>& grads, const autograd::Node&) {
        const Tensor& g = grads[0];
        return std::vector<Tensor>{DCAE_KERNEL(g.device(), softmax_backward, g, saved_out.get(), dim, log)};
      });
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, /*log=*/false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, /*log=*/true); }

}  // namespace dcae::ops
