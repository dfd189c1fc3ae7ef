#include "ops/attention.h"

#include <cmath>

#include "core/autograd/record.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

namespace dcae::ops {

using autograd::Node;
using autograd::SavedTensor;

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                    double scale) {
  const char* name = "scaled_dot_product_attention";
  DCAE_CHECK(q.defined() && k.defined() && v.defined(), name, ": undefined q, k or v");
  DCAE_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, name, " needs q [B, H, Lq, D], k [B, H, Lk, D] and ",
             "v [B, H, Lk, Dv], got q ", q.str(), ", k ", k.str(), ", v ", v.str());
  DCAE_CHECK(is_floating(q.dtype()) && q.dtype() == k.dtype() && q.dtype() == v.dtype(), name,
             ": q, k and v need one floating dtype, got q ", q.str(), ", k ", k.str(), ", v ", v.str());
  DCAE_CHECK(q.device() == k.device() && q.device() == v.device(), name, ": q, k and v are on different devices: q ",
             q.str(), ", k ", k.str(), ", v ", v.str());
  DCAE_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(1) == q.size(1) && v.size(1) == q.size(1) &&
                 k.size(3) == q.size(3) && v.size(2) == k.size(2),
             name, ": shapes do not match q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv]: q ", q.str(), ", k ",
             k.str(), ", v ", v.str());
  const Shape scores_shape{q.size(0), q.size(1), q.size(2), k.size(2)};
  if (mask.defined()) {
    DCAE_CHECK(is_floating(mask.dtype()), name, ": the mask is additive and needs a floating dtype, got ", mask.str());
    DCAE_CHECK(mask.device() == q.device(), name, ": mask ", mask.str(), " is not on the device of q ", q.str());
    bool broadcasts = mask.dim() <= 4;
    for (int64_t i = 1; broadcasts && i <= mask.dim(); ++i) {
      const int64_t own = mask.size(mask.dim() - i);
      broadcasts = own == 1 || own == scores_shape[4 - i];
    }
    DCAE_CHECK(broadcasts, name, ": mask ", mask.str(), " does not broadcast to the scores ", shape_str(scores_shape));
  }
  DCAE_CHECK(std::isfinite(scale), name, ": scale must be finite, got ", scale);
  const double resolved_scale = scale != 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));

  Tensor logsumexp;
  Tensor out = DCAE_KERNEL(q.device(), attention_forward, q, k, v, mask, resolved_scale, logsumexp);
  const bool mask_in_graph = mask.defined();
  const std::vector<Tensor> inputs = mask_in_graph ? std::vector<Tensor>{q, k, v, mask} : std::vector<Tensor>{q, k, v};
  if (!autograd::needs_history(inputs)) return out;
  autograd::record(
      name, inputs, {out},
      [sq = SavedTensor(q), sk = SavedTensor(k), sv = SavedTensor(v),
       smask = mask_in_graph ? SavedTensor(mask) : SavedTensor(), slse = SavedTensor(logsumexp),
       sout = SavedTensor(out), resolved_scale,
       mask_shape = mask.defined() ? mask.shape() : Shape{},
       mask_dtype = mask.defined() ? mask.dtype() : q.dtype()](const std::vector<Tensor>& grads, const Node& node) {
        const Tensor& g = grads[0];
        const Tensor m = smask.defined() ? smask.get() : Tensor();
        const bool want_mask = m.defined() && node.needs_input_grad(3);
        std::vector<Tensor> d = DCAE_KERNEL(g.device(), attention_backward, g, sq.get(), sk.get(), sv.get(), m,
                                            resolved_scale, slse.get(), sout.get(), want_mask);
        for (size_t i = 0; i < 3; ++i)
          if (!node.needs_input_grad(i)) d[i] = Tensor();
        if (!m.defined())
          d.pop_back();
        else if (want_mask)
          d[3] = sum_to(d[3], mask_shape).to(mask_dtype);
        return d;
      });
  return out;
}

Tensor relu_linear_attention(const Tensor& qkv, int64_t head_dim, double eps, LinearAttentionForm form) {
  const char* name = "relu_linear_attention";
  DCAE_CHECK(qkv.defined(), name, ": undefined input");
  DCAE_CHECK(is_floating(qkv.dtype()), name, " needs a floating tensor, got ", qkv.str());
  DCAE_CHECK(head_dim > 0, name, ": head_dim must be positive, got ", head_dim);
  DCAE_CHECK(qkv.dim() == 4 && qkv.size(3) % (3 * head_dim) == 0, name,
             " needs NHWC qkv [N, H, W, 3 * heads * head_dim] with head_dim ", head_dim, ", got ", qkv.str());
  DCAE_CHECK(eps >= 0 && std::isfinite(eps), name, ": eps must be finite and non-negative, got ", eps);
  const bool quadratic = form == LinearAttentionForm::quadratic ||
                         (form == LinearAttentionForm::automatic && qkv.size(1) * qkv.size(2) <= head_dim);
  Tensor out = DCAE_KERNEL(qkv.device(), relu_linear_attention_forward, qkv, head_dim, eps, quadratic);
  if (!autograd::needs_history({qkv})) return out;
  // Backward recomputes the per-head intermediates from qkv: O(d^2) per token, cheaper than keeping them.
  autograd::record(name, {qkv}, {out},
                   [sqkv = SavedTensor(qkv), head_dim, eps, quadratic](const std::vector<Tensor>& grads, const Node&) {
                     const Tensor& g = grads[0];
                     return std::vector<Tensor>{DCAE_KERNEL(g.device(), relu_linear_attention_backward, g, sqkv.get(),
                                                            head_dim, eps, quadratic)};
                   });
  return out;
}

}  // namespace dcae::ops
