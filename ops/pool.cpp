#include "ops/pool.h"

#include "core/autograd/record.h"
#include "ops/cpu/pool.h"
#include "ops/dispatch.h"

namespace dcae::ops {

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride) {
  DCAE_CHECK(x.dim() == 4 && is_floating(x.dtype()), "max_pool2d needs a floating NHWC tensor [N, H, W, C], got ",
             x.str());
  DCAE_CHECK(kernel > 0 && stride > 0 && x.size(1) >= kernel && x.size(2) >= kernel, "max_pool2d: kernel ", kernel,
             ", stride ", stride, " do not fit ", x.str());
  Tensor argmax;
  Tensor out = DCAE_KERNEL(x.device(), max_pool2d_forward, x, kernel, stride, argmax);
  if (!autograd::needs_history({x})) return out;
  autograd::record("max_pool2d", {x}, {out},
                   [argmax, shape = x.shape()](const std::vector<Tensor>& grads, const autograd::Node&) {
                     return std::vector<Tensor>{DCAE_KERNEL(grads[0].device(), max_pool2d_backward, grads[0], argmax,
                                                            shape)};
                   });
  return out;
}

}  // namespace dcae::ops
