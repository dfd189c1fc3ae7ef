// Embedding lookup: rows of a weight table picked by integer indices.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

// weight [V, D] (floating), indices i64 of any shape with values in [0, V) -> [..., D] (the indices' shape plus D),
// in weight's dtype. The gradient w.r.t. weight scatter-adds the output gradient into the picked rows (repeated
// indices accumulate); indices take no gradient. An out-of-range index is an error naming it and V.
Tensor embedding(const Tensor& weight, const Tensor& indices);

}  // namespace dcae::ops
