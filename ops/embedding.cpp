#include "ops/embedding.h"

#include "core/autograd/record.h"
#include "ops/cpu/embedding.h"
#include "ops/dispatch.h"

namespace dcae::ops {

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  DCAE_CHECK(weight.defined() && indices.defined(), "embedding: undefined weight or indices");
  DCAE_CHECK(weight.dim() == 2 && is_floating(weight.dtype()), "embedding needs a floating weight [V, D], got ",
             weight.str());
  DCAE_CHECK(indices.dtype() == DType::i64, "embedding needs i64 indices, got ", indices.str());
  DCAE_CHECK(weight.device() == indices.device(), "embedding: weight ", weight.str(), " and indices ", indices.str(),
             " are on different devices");
  Tensor out = DCAE_KERNEL(weight.device(), embedding_forward, weight, indices);
  if (!autograd::needs_history({weight})) return out;
  autograd::record("embedding", {weight}, {out},
                   [sidx = autograd::SavedTensor(indices), vocab = weight.size(0)](const std::vector<Tensor>& grads,
                                                                                   const autograd::Node&) {
                     const Tensor& g = grads[0];
                     return std::vector<Tensor>{DCAE_KERNEL(g.device(), embedding_backward, g, sidx.get(), vocab)};
                   });
  return out;
}

}  // namespace dcae::ops
