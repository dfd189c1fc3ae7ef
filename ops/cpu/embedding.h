#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cpu {

// out[i, :] = weight[indices[i], :] over the flattened indices; output shape indices.shape() + [D], weight's dtype.
// Throws naming the index and V when an index is outside [0, V).
Tensor embedding_forward(const Tensor& weight, const Tensor& indices);
// dweight [num_embeddings, D] (grad's dtype): dweight[indices[i], :] += grad[i, :], accumulated in the compute dtype.
Tensor embedding_backward(const Tensor& grad, const Tensor& indices, int64_t num_embeddings);

}  // namespace dcae::ops::cpu
