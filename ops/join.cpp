#include "ops/join.h"

#include "core/autograd/record.h"
#include "ops/view.h"

namespace dcae::ops {

using autograd::Node;

Tensor concat(const std::vector<Tensor>& xs, int64_t dim_in) {
  DCAE_CHECK(!xs.empty(), "concat needs at least one tensor");
  const Tensor& first = xs[0];
  DCAE_CHECK(first.defined(), "concat: input 0 is undefined");
  DCAE_CHECK(first.dim() >= 1, "concat cannot join scalars, got ", first.str());
  const int64_t dim = normalize_dim(dim_in, first.dim());
  Shape out_shape = first.shape();
  out_shape[dim] = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    DCAE_CHECK(x.defined(), "concat: input ", k, " is undefined");
    DCAE_CHECK(x.dtype() == first.dtype() && x.device() == first.device(), "concat: input ", k, " ", x.str(),
               " differs in dtype or device from input 0 ", first.str());
    bool same_other_dims = x.dim() == first.dim();
    for (int64_t d = 0; same_other_dims && d < x.dim(); ++d) same_other_dims = d == dim || x.size(d) == first.size(d);
    DCAE_CHECK(same_other_dims, "concat along dim ", dim, ": input ", k, " ", x.str(),
               " does not match input 0 ", first.str(), " outside that dim");
    out_shape[dim] += x.size(dim);
  }

  Tensor out = empty(out_shape, first.dtype(), first.device());
  std::vector<int64_t> offsets, sizes;
  int64_t offset = 0;
  for (const Tensor& x : xs) {
    out.narrow(dim, offset, x.size(dim)).copy_(x);
    offsets.push_back(offset);
    sizes.push_back(x.size(dim));
    offset += x.size(dim);
  }
  if (!autograd::needs_history(xs)) return out;
  autograd::record("concat", xs, {out},
                   [dim, offsets, sizes](const std::vector<Tensor>& grads, const Node& node) {
                     std::vector<Tensor> result(offsets.size());
                     for (size_t k = 0; k < offsets.size(); ++k)
                       if (node.needs_input_grad(k)) result[k] = grads[0].narrow(dim, offsets[k], sizes[k]);
                     return result;
                   });
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim_in) {
  DCAE_CHECK(x.defined(), "split: undefined input");
  DCAE_CHECK(x.dim() >= 1, "split cannot split a scalar ", x.str());
  const int64_t dim = normalize_dim(dim_in, x.dim());
  int64_t total = 0;
  for (int64_t size : sizes) {
    DCAE_CHECK(size >= 0, "split: negative size in ", shape_str(sizes), " for ", x.str());
    total += size;
  }
  DCAE_CHECK(total == x.size(dim), "split: sizes ", shape_str(sizes), " add up to ", total, ", but dim ", dim,
             " of ", x.str(), " has ", x.size(dim));
  std::vector<Tensor> pieces;
  int64_t offset = 0;
  for (int64_t size : sizes) {
    pieces.push_back(narrow(x, dim, offset, size));
    offset += size;
  }
  return pieces;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim_in) {
  DCAE_CHECK(x.defined(), "chunk: undefined input");
  DCAE_CHECK(x.dim() >= 1, "chunk cannot split a scalar ", x.str());
  const int64_t dim = normalize_dim(dim_in, x.dim());
  DCAE_CHECK(chunks >= 1 && x.size(dim) % chunks == 0, "chunk: dim ", dim, " of ", x.str(),
             " does not split into ", chunks, " equal chunks");
  return split(x, std::vector<int64_t>(chunks, x.size(dim) / chunks), dim);
}

}  // namespace dcae::ops
