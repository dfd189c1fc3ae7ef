#include "ops/glu.h"

#include "core/autograd/record.h"
#include "ops/cpu/glu.h"
#include "ops/dispatch.h"

namespace dcae::ops {

Tensor silu_gate(const Tensor& x) {
  DCAE_CHECK(x.defined(), "silu_gate: undefined input");
  DCAE_CHECK(is_floating(x.dtype()), "silu_gate needs a floating tensor, got ", x.str());
  DCAE_CHECK(x.dim() >= 1 && x.size(-1) > 0 && x.size(-1) % 2 == 0, "silu_gate needs x [..., 2M] with an even, ",
             "non-empty last dim (the value and gate halves), got ", x.str());
  Tensor out = DCAE_KERNEL(x.device(), silu_gate_forward, x);
  if (!autograd::needs_history({x})) return out;
  autograd::record("silu_gate", {x}, {out},
                   [sx = autograd::SavedTensor(x)](const std::vector<Tensor>& grads, const autograd::Node&) {
                     const Tensor& g = grads[0];
                     return std::vector<Tensor>{DCAE_KERNEL(g.device(), silu_gate_backward, g, sx.get())};
                   });
  return out;
}

}  // namespace dcae::ops
