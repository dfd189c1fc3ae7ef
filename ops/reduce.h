// Reductions over a set of dims (empty = all dims). Accumulation is in double on the CPU for f32/f64 and in
// fp32 for bf16/f16 inputs.
#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops {

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Variance with `correction` (0 = population, 1 = unbiased).
Tensor var(const Tensor& x, const std::vector<int64_t>& dims = {}, int64_t correction = 1, bool keepdim = false);
// Maximum over one dim; the gradient goes to the first maximal element.
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);  // over everything, to a scalar

}  // namespace dcae::ops
