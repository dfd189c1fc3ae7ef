#include "ops/reduce.h"

#include <algorithm>

#include "core/autograd/record.h"
#include "ops/cpu/reduce.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::ops {

using autograd::Node;

namespace {

// Sorted unique non-negative dims; empty means all.
std::vector<int64_t> normalize_dims(const std::vector<int64_t>& dims, int64_t rank) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < rank; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(normalize_dim(d, rank));
  std::sort(out.begin(), out.end());
  DCAE_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), "reduction dims ", shape_str(dims),
             " repeat a dim");
  return out;
}

Shape drop_dims(const Shape& kept, const std::vector<int64_t>& dims) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(kept.size()); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) out.push_back(kept[d]);
  return out;
}

int64_t reduced_count(const Shape& shape, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= shape[d];
  return n;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  DCAE_CHECK(is_floating(x.dtype()), "sum needs a floating tensor, got ", x.str());
  const std::vector<int64_t> dims = normalize_dims(dims_in, x.dim());
  Tensor kept = DCAE_KERNEL(x.device(), sum_forward, x, dims);
  Tensor out = keepdim ? kept : kept.reshape(drop_dims(kept.shape(), dims));
  if (!autograd::needs_history({x})) return out;
  autograd::record("sum", {x}, {out}, [in = x.shape(), kept_shape = kept.shape()](const std::vector<Tensor>& grads,
                                                                                  const Node&) {
    return std::vector<Tensor>{grads[0].reshape(kept_shape).expand(in)};
  });
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  const std::vector<int64_t> dims = normalize_dims(dims_in, x.dim());
  const int64_t n = reduced_count(x.shape(), dims);
  DCAE_CHECK(n > 0, "mean over zero elements of ", x.str());
  return mul(sum(x, dims, keepdim), 1.0 / static_cast<double>(n));
}

Tensor var(const Tensor& x, const std::vector<int64_t>& dims_in, int64_t correction, bool keepdim) {
  const std::vector<int64_t> dims = normalize_dims(dims_in, x.dim());
  const int64_t n = reduced_count(x.shape(), dims);
  DCAE_CHECK(n - correction > 0, "var over ", n, " elements with correction ", correction, " of ", x.str());
  const Tensor centered = sub(x, mean(x, dims, /*keepdim=*/true));
  return mul(sum(square(centered), dims, keepdim), 1.0 / static_cast<double>(n - correction));
}

Tensor max(const Tensor& x, int64_t dim_in, bool keepdim) {
  DCAE_CHECK(is_floating(x.dtype()), "max needs a floating tensor, got ", x.str());
  const int64_t dim = normalize_dim(dim_in, x.dim());
  Tensor indices;
  Tensor kept = DCAE_KERNEL(x.device(), max_forward, x, dim, indices);
  Tensor out = keepdim ? kept : kept.squeeze(dim);
  if (!autograd::needs_history({x})) return out;
  autograd::record("max", {x}, {out},
                   [indices, dim, in = x.shape(), kept_shape = kept.shape()](const std::vector<Tensor>& grads,
                                                                             const Node&) {
                     const Tensor g = grads[0].reshape(kept_shape);
                     return std::vector<Tensor>{DCAE_KERNEL(g.device(), max_backward, g, indices, in, dim)};
                   });
  return out;
}

Tensor max(const Tensor& x) { return max(reshape(x, {x.numel()}), 0); }

}  // namespace dcae::ops
