// The quadratic form of ReLU linear attention on CUDA (linear_attention_quadratic.cu): one block per (image, head)
// holding every token in shared memory. Used for small maps (H * W <= head_dim in DC-AE); larger ones run the linear
// kernels, which compute the same function.
#pragma once
#include "core/tensor/cuda/stream.h"
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda::linear_detail {

struct QkvLayout;

// Whether one block's shared memory holds a head of `tokens` tokens.
bool quadratic_attention_fits(DType dtype, int64_t tokens, int64_t head_dim);
// qkv contiguous NHWC [N, H, W, 3C]; out [N, H, W, C] (written); dqkv like qkv (written); grad like out.
void quadratic_attention_forward(const Tensor& qkv, const Tensor& out, const QkvLayout& s, double eps,
                                 ::dcae::cuda::StreamHandle stream);
void quadratic_attention_backward(const Tensor& grad, const Tensor& qkv, const Tensor& dqkv, const QkvLayout& s,
                                  double eps, ::dcae::cuda::StreamHandle stream);

}  // namespace dcae::ops::cuda::linear_detail
