#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// Scaled dot-product attention. q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv]; mask undefined or an additive
// float tensor broadcastable to [B, H, Lq, Lk]; scale already resolved (non-zero). Returns [B, H, Lq, Dv] in q's
// dtype; `logsumexp` receives [B, H, Lq] (compute dtype): the per-row log of the softmax normalizer, -inf for a
// fully masked row.
Tensor attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
                         Tensor& logsumexp);

// Gradients {dq, dk, dv, dscores} from the output gradient [B, H, Lq, Dv], in the dtype of `grad`; the
// probabilities are recomputed from q, k, mask and logsumexp. dscores, the gradient w.r.t. the pre-softmax scores
// [B, H, Lq, Lk] (the mask's gradient before broadcasting is undone), is computed only when want_scores is true.
// `out` is the forward output (may be undefined): the CUDA backend reads sum_c dO O from it, the CPU recomputes
// that sum from the probabilities and does not read it.
std::vector<Tensor> attention_backward(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& mask, double scale, const Tensor& logsumexp, const Tensor& out,
                                       bool want_scores);

// ReLU linear attention on NHWC qkv [N, H, W, 3C] (per-head [q, k, v] channel groups of head_dim) -> [N, H, W, C].
// `quadratic` selects the (Ntok x Ntok) form; both forms compute the same function.
Tensor relu_linear_attention_forward(const Tensor& qkv, int64_t head_dim, double eps, bool quadratic);
// Gradient w.r.t. qkv [N, H, W, 3C] from the output gradient [N, H, W, C]; recomputes the forward intermediates.
Tensor relu_linear_attention_backward(const Tensor& grad, const Tensor& qkv, int64_t head_dim, double eps,
                                      bool quadratic);

}  // namespace dcae::ops::cpu
