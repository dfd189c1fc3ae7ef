#include "ops/cpu/embedding.h"

#include <cstring>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

Tensor embedding_forward(const Tensor& weight_in, const Tensor& indices_in) {
  const Tensor weight = weight_in.contiguous();
  const Tensor indices = indices_in.contiguous();
  const int64_t vocab = weight.size(0), width = weight.size(1), count = indices.numel();
  const int64_t* idx = indices.data<int64_t>();
  for (int64_t i = 0; i < count; ++i)
    DCAE_CHECK(idx[i] >= 0 && idx[i] < vocab, "embedding: index ", idx[i], " (at flat position ", i, " of indices ",
               indices_in.str(), ") is out of range for V = ", vocab, " rows of weight ", weight_in.str());
  Shape out_shape = indices.shape();
  out_shape.push_back(width);
  Tensor out = empty(out_shape, weight.dtype());
  // A gather is a copy of whole rows: no arithmetic, so it runs in the storage dtype.
  const size_t row_bytes = static_cast<size_t>(width) * dtype_size(weight.dtype());
  const auto* src = static_cast<const unsigned char*>(weight.raw_data());
  auto* dst = static_cast<unsigned char*>(out.raw_data());
  parallel_for(count, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(static_cast<int64_t>(row_bytes), 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t i = begin; i < end; ++i)
                   std::memcpy(dst + i * row_bytes, src + idx[i] * row_bytes, row_bytes);
               });
  return out;
}

Tensor embedding_backward(const Tensor& grad_in, const Tensor& indices_in, int64_t num_embeddings) {
  const Tensor grad = compute_input(grad_in);
  const Tensor indices = indices_in.contiguous();
  const int64_t width = grad.size(grad.dim() - 1), count = indices.numel();
  Tensor dweight = zeros({num_embeddings, width}, grad.dtype());
  visit_float(grad.dtype(), "embedding backward", [&]<typename T>() {
    const T* pg = grad.data<T>();
    const int64_t* idx = indices.data<int64_t>();
    T* pw = dweight.data<T>();
    // Threads own disjoint column ranges, so repeated indices never race and the sum order is fixed.
    parallel_for(width, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(count, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t i = 0; i < count; ++i) {
        const T* src = pg + i * width;
        T* dst = pw + idx[i] * width;
        for (int64_t c = begin; c < end; ++c) dst[c] += src[c];
      }
    });
  });
  return dweight.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
