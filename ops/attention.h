// Attention: softmax scaled dot-product attention (the reference path) and DC-AE's ReLU linear attention (the core
// of LiteMLA, spec section 4.2.1). Both have fused forward and backward kernels; bf16/f16 inputs are computed in
// fp32 and the result is rounded back to the input dtype.
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::ops {

// softmax(scale * q k^T + mask) v per batch and head. q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] (Dv may
// differ from D) -> [B, H, Lq, Dv]. `mask` is optional and additive, of any floating dtype, broadcastable to
// [B, H, Lq, Lk] (use -inf to forbid a position); it gets a gradient when it requires one. scale = 0 means
// 1/sqrt(D). A query row whose every score is -inf yields zeros (and passes no gradient) instead of NaN.
// Backward recomputes the probabilities from q, k, mask and the saved per-row log-sum-exp; the output is kept for
// it too (the CUDA backward reads rowsum(dO * O) from it, as FlashAttention-2 does).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask = Tensor(),
                                    double scale = 0.0);

// Which form of ReLU linear attention to evaluate; both compute the same function.
enum class LinearAttentionForm {
  automatic,  // quadratic when H * W <= head_dim (as the reference implementation), else linear
  linear,     // O(H*W * d^2) per head: M = v' k^T, o = M q
  quadratic,  // O((H*W)^2 * d) per head: A = k^T q, columns normalized, out = v A
};

// DC-AE's ReLU linear attention on a fused qkv map. qkv is NHWC [N, H, W, 3 * C] with channels grouped per head as
// [q_h (d), k_h (d), v_h (d)] (head-major: channel h*3d + j is q, h*3d + d + j is k, h*3d + 2d + j is v), d =
// head_dim, heads = C / d. Output NHWC [N, H, W, C] with channel h*d + j. Per head, with the Ntok = H*W tokens as
// columns: q, k <- ReLU(q), ReLU(k); v' = [v; 1] ((d+1) x Ntok); M = v' k^T; o = M q; out = o[0:d] / (o[d] + eps).
// Accumulates in fp32 (f64 for f64 inputs). The gradient flows to all of qkv, through the ReLUs and the division.
Tensor relu_linear_attention(const Tensor& qkv, int64_t head_dim = 32, double eps = 1e-15,
                             LinearAttentionForm form = LinearAttentionForm::automatic);

}  // namespace dcae::ops
