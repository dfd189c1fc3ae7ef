#include "ops/cuda/embedding.h"

#include <cuda_runtime.h>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

// first_bad = the lowest flat position whose index is outside [0, vocab) (left at `count` when there is none).
__global__ void find_bad_index_kernel(const int64_t* indices, int64_t count, int64_t vocab,
                                      unsigned long long* first_bad) {
  for (int64_t i = global_thread<int64_t>(); i < count; i += grid_stride<int64_t>())
    if (indices[i] < 0 || indices[i] >= vocab) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

// out[i, :] = weight[indices[i], :] in units U (whole rows of `width` units).
template <typename U>
__global__ void gather_rows_kernel(U* __restrict__ out, const U* __restrict__ weight, const int64_t* __restrict__ indices,
                                   int64_t count, int64_t width) {
  for (int64_t e = global_thread<int64_t>(); e < count * width; e += grid_stride<int64_t>()) {
    const int64_t row = e / width, col = e % width;
    out[e] = weight[indices[row] * width + col];
  }
}

// dweight[indices[i], c] += grad[i, c] for i in order; a thread per column c, so no two threads touch one element.
template <typename T, typename A>
__global__ void scatter_add_columns_kernel(A* __restrict__ dweight, const T* __restrict__ grad,
                                           const int64_t* __restrict__ indices, int64_t count, int64_t width) {
  for (int64_t c = global_thread<int64_t>(); c < width; c += grid_stride<int64_t>())
    for (int64_t i = 0; i < count; ++i) dweight[indices[i] * width + c] += static_cast<A>(to_compute(grad[i * width + c]));
}

}  // namespace

Tensor embedding_forward(const Tensor& weight_in, const Tensor& indices_in) {
  const Tensor weight = weight_in.contiguous();
  const Tensor indices = indices_in.contiguous();
  const int64_t vocab = weight.size(0), width = weight.size(1), count = indices.numel();
  Shape out_shape = indices.shape();
  out_shape.push_back(width);
  Tensor out = empty(out_shape, weight.dtype(), weight.device());
  if (count == 0) return out;
  DeviceGuard guard(weight.device().index);
  const cudaStream_t stream = stream_for(weight);
  const int64_t* pidx = indices.data<int64_t>();
  {
    Tensor flag = full({1}, static_cast<double>(count), DType::i64, weight.device());
    find_bad_index_kernel<<<grid_for(count), kBlockThreads, 0, stream>>>(
        pidx, count, vocab, reinterpret_cast<unsigned long long*>(flag.data<int64_t>()));
    check_launch("find_bad_index_kernel");
    const int64_t first_bad = flag.item<int64_t>();
    if (first_bad < count) {
      const int64_t bad = indices.reshape({count}).narrow(0, first_bad, 1).item<int64_t>();
      DCAE_FAIL("embedding: index ", bad, " (at flat position ", first_bad, " of indices ", indices_in.str(),
                ") is out of range for V = ", vocab, " rows of weight ", weight_in.str());
    }
  }
  if (width == 0) return out;
  // Whole rows move as 16-byte units when every row starts 16-byte aligned, else as elements.
  const size_t row_bytes = static_cast<size_t>(width) * dtype_size(weight.dtype());
  const bool wide = row_bytes % 16 == 0 && aligned16(weight.raw_data()) && aligned16(out.raw_data());
  const size_t unit = wide ? 16 : dtype_size(weight.dtype());
  const int64_t units = static_cast<int64_t>(row_bytes / unit);
  const auto launch = [&]<typename U>() {
    gather_rows_kernel<U><<<grid_for(count * units), kBlockThreads, 0, stream>>>(
        static_cast<U*>(out.raw_data()), static_cast<const U*>(weight.raw_data()), pidx, count, units);
  };
  if (wide) launch.template operator()<uint4>();
  else visit_bits(unit, launch);
  check_launch("gather_rows_kernel");
  return out;
}

Tensor embedding_backward(const Tensor& grad_in, const Tensor& indices_in, int64_t num_embeddings) {
  const Tensor grad = grad_in.contiguous();
  const Tensor indices = indices_in.contiguous();
  const int64_t width = grad.size(grad.dim() - 1), count = indices.numel();
  const DType accumulate = grad.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor dweight = zeros({num_embeddings, width}, accumulate, grad.device());
  if (count == 0 || width == 0) return dweight.to(grad_in.dtype());
  DeviceGuard guard(grad.device().index);
  const cudaStream_t stream = stream_for(grad);
  visit_device_float(grad.dtype(), "embedding backward", [&]<typename T>() {
    using A = ComputeT<T>;
    scatter_add_columns_kernel<T, A><<<grid_for(width), kBlockThreads, 0, stream>>>(
        static_cast<A*>(dweight.raw_data()), static_cast<const T*>(grad.raw_data()), indices.data<int64_t>(), count,
        width);
  });
  check_launch("scatter_add_columns_kernel");
  return dweight.to(grad_in.dtype());
}

}  // namespace dcae::ops::cuda
