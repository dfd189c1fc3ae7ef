#include "ops/cuda/pool.h"

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

struct PoolShape {
  int64_t h, w, c, ho, wo, kernel, stride;
};

// out[n, oy, ox, c] = the first maximum of the window (a NaN first element stays, as on the CPU); argmax gets
// its flat index iy * W + ix.
template <typename T>
__global__ void max_pool_forward_kernel(const T* x, T* out, int64_t* argmax, int64_t total, PoolShape s) {
  for (int64_t idx = global_thread<int64_t>(); idx < total; idx += grid_stride<int64_t>()) {
    const int64_t c = idx % s.c;
    int64_t rest = idx / s.c;
    const int64_t ox = rest % s.wo;
    rest /= s.wo;
    const int64_t oy = rest % s.ho, n = rest / s.ho;
    ComputeT<T> best = 0;
    T best_value = x[0];
    int64_t where = -1;
    for (int64_t ky = 0; ky < s.kernel; ++ky) {
      const int64_t iy = oy * s.stride + ky;
      for (int64_t kx = 0; kx < s.kernel; ++kx) {
        const int64_t ix = ox * s.stride + kx;
        const T value = x[((n * s.h + iy) * s.w + ix) * s.c + c];
        const ComputeT<T> v = to_compute(value);
        if (where < 0 || v > best) best = v, best_value = value, where = iy * s.w + ix;
      }
    }
    out[idx] = best_value;
    argmax[idx] = where;
  }
}

// acc[n, argmax, c] += grad[n, o, c] for every output element o. Windows that overlap (stride < kernel) may send
// several gradients to one input; they are added atomically in the compute type.
template <typename T>
__global__ void max_pool_backward_kernel(const T* grad, const int64_t* argmax, ComputeT<T>* acc, int64_t total,
                                         int64_t out_hw, int64_t in_hw, int64_t channels) {
  for (int64_t idx = global_thread<int64_t>(); idx < total; idx += grid_stride<int64_t>()) {
    const int64_t c = idx % channels, n = idx / channels / out_hw;
    atomicAdd(acc + (n * in_hw + argmax[idx]) * channels + c, to_compute(grad[idx]));
  }
}

}  // namespace

Tensor max_pool2d_forward(const Tensor& x_in, int64_t kernel, int64_t stride, Tensor& argmax) {
  const Tensor x = x_in.contiguous();
  const int64_t n = x.size(0);
  const PoolShape s{x.size(1), x.size(2), x.size(3), (x.size(1) - kernel) / stride + 1,
                    (x.size(2) - kernel) / stride + 1, kernel, stride};
  Tensor out = empty({n, s.ho, s.wo, s.c}, x.dtype(), x.device());
  argmax = empty({n, s.ho, s.wo, s.c}, DType::i64, x.device());
  const int64_t total = out.numel();
  if (total == 0) return out;
  DeviceGuard guard(x.device().index);
  visit_device_float(x.dtype(), "max_pool2d", [&]<typename T>() {
    max_pool_forward_kernel<T><<<grid_for(total), kBlockThreads, 0, stream_for(x)>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), argmax.data<int64_t>(), total, s);
  });
  check_launch("max_pool_forward_kernel");
  return out;
}

Tensor max_pool2d_backward(const Tensor& grad_in, const Tensor& argmax_in, const Shape& shape) {
  const Tensor grad = grad_in.contiguous(), argmax = argmax_in.contiguous();
  const DType compute = grad.dtype() == DType::f64 ? DType::f64 : DType::f32;
  // Sums accumulate in the compute dtype (the result itself for f32/f64), rounded once for bf16/f16 like the CPU.
  Tensor acc = zeros(shape, compute, grad.device());
  const int64_t total = grad.numel();
  if (total == 0) return acc.to(grad.dtype());
  DeviceGuard guard(grad.device().index);
  visit_device_float(grad.dtype(), "max_pool2d backward", [&]<typename T>() {
    max_pool_backward_kernel<T><<<grid_for(total), kBlockThreads, 0, stream_for(grad)>>>(
        static_cast<const T*>(grad.raw_data()), argmax.data<int64_t>(), static_cast<ComputeT<T>*>(acc.raw_data()),
        total, grad.size(1) * grad.size(2), shape[1] * shape[2], shape[3]);
  });
  check_launch("max_pool_backward_kernel");
  return acc.to(grad.dtype());
}

}  // namespace dcae::ops::cuda
