#include "ops/cuda/elementwise.h"

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

// The CPU's formulas (ops/cpu/elementwise.cpp), in the compute type C.
template <BinaryOp op, typename C>
__device__ __forceinline__ C apply_binary(C x, C y) {
  if constexpr (op == BinaryOp::add) return x + y;
  else if constexpr (op == BinaryOp::sub) return x - y;
  else if constexpr (op == BinaryOp::mul) return x * y;
  else if constexpr (op == BinaryOp::div) return x / y;
  else if constexpr (op == BinaryOp::maximum) return x >= y ? x : y;
  else if constexpr (op == BinaryOp::minimum) return x <= y ? x : y;
  else if constexpr (op == BinaryOp::ge) return C(x >= y ? 1 : 0);
  else if constexpr (op == BinaryOp::gt) return C(x > y ? 1 : 0);
  else if constexpr (op == BinaryOp::le) return C(x <= y ? 1 : 0);
  else if constexpr (op == BinaryOp::lt) return C(x < y ? 1 : 0);
  else return C(x == y ? 1 : 0);
}

template <BinaryOp op, typename T>
__device__ __forceinline__ T binary_element(T x, T y) {
  return from_compute<T>(apply_binary<op>(to_compute(x), to_compute(y)));
}

// Same-shape contiguous operands: `vectors` 16-byte chunks (0 when a pointer is misaligned), then the tail.
template <BinaryOp op, typename T>
__global__ void binary_contiguous_kernel(T* out, const T* a, const T* b, int64_t n, int64_t vectors) {
  using V = Vec16<T>;
  for (int64_t i = global_thread<int64_t>(); i < vectors; i += grid_stride<int64_t>()) {
    const V va = reinterpret_cast<const V*>(a)[i];
    const V vb = reinterpret_cast<const V*>(b)[i];
    V vo;
#pragma unroll
    for (int k = 0; k < V::kCount; ++k) vo.v[k] = binary_element<op>(va.v[k], vb.v[k]);
    reinterpret_cast<V*>(out)[i] = vo;
  }
  for (int64_t i = vectors * V::kCount + global_thread<int64_t>(); i < n; i += grid_stride<int64_t>())
    out[i] = binary_element<op>(a[i], b[i]);
}

// Broadcast or strided operands: offsets of (out, a, b) from the collapsed layout.
template <BinaryOp op, typename T, typename Index>
__global__ void binary_strided_kernel(T* out, const T* a, const T* b, OffsetCalculator<3, Index> calc, Index n) {
  for (Index i = global_thread<Index>(); i < n; i += grid_stride<Index>()) {
    const auto at = calc.get(i);
    out[at.value[0]] = binary_element<op>(a[at.value[1]], b[at.value[2]]);
  }
}

template <BinaryOp op, typename T>
void launch_binary(const Tensor& out, const Tensor& a, const Tensor& b, cudaStream_t stream) {
  auto* po = static_cast<T*>(out.raw_data());
  const auto* pa = static_cast<const T*>(a.raw_data());
  const auto* pb = static_cast<const T*>(b.raw_data());
  const int64_t n = out.numel();
  if constexpr (!std::is_integral_v<T>) {
    if (a.is_contiguous() && b.is_contiguous()) {  // expanded views are not contiguous, so shapes match here
      const bool aligned = aligned16(po) && aligned16(pa) && aligned16(pb);
      const int64_t vectors = aligned ? n / Vec16<T>::kCount : 0;
      binary_contiguous_kernel<op, T><<<grid_for(aligned ? vectors : n), kBlockThreads, 0, stream>>>(po, pa, pb, n,
                                                                                                    vectors);
      check_launch("binary_contiguous_kernel");
      return;
    }
  }
  const StridedLayout<3> layout(out.shape(), {out.strides(), a.strides(), b.strides()});
  launch_strided(layout, [&](auto calc, auto count) {
    using Index = decltype(count);
    binary_strided_kernel<op, T, Index><<<grid_for(count), kBlockThreads, 0, stream>>>(po, pa, pb, calc, count);
  });
  check_launch("binary_strided_kernel");
}

template <typename T>
void dispatch_binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, cudaStream_t stream) {
  switch (op) {
    case BinaryOp::add: return launch_binary<BinaryOp::add, T>(out, a, b, stream);
    case BinaryOp::sub: return launch_binary<BinaryOp::sub, T>(out, a, b, stream);
    case BinaryOp::mul: return launch_binary<BinaryOp::mul, T>(out, a, b, stream);
    case BinaryOp::div: return launch_binary<BinaryOp::div, T>(out, a, b, stream);
    case BinaryOp::maximum: return launch_binary<BinaryOp::maximum, T>(out, a, b, stream);
    case BinaryOp::minimum: return launch_binary<BinaryOp::minimum, T>(out, a, b, stream);
    case BinaryOp::ge: return launch_binary<BinaryOp::ge, T>(out, a, b, stream);
    case BinaryOp::gt: return launch_binary<BinaryOp::gt, T>(out, a, b, stream);
    case BinaryOp::le: return launch_binary<BinaryOp::le, T>(out, a, b, stream);
    case BinaryOp::lt: return launch_binary<BinaryOp::lt, T>(out, a, b, stream);
    case BinaryOp::eq: return launch_binary<BinaryOp::eq, T>(out, a, b, stream);
  }
}

// where: element selection, so kernels move raw bits of the element size.
template <typename U, typename Index>
__global__ void where_kernel(U* out, const uint8_t* cond, const U* a, const U* b, OffsetCalculator<4, Index> calc,
                             Index n) {
  for (Index i = global_thread<Index>(); i < n; i += grid_stride<Index>()) {
    const auto at = calc.get(i);
    out[at.value[0]] = cond[at.value[1]] ? a[at.value[2]] : b[at.value[3]];
  }
}

}  // namespace

Tensor binary_forward(BinaryOp op, const Tensor& a_in, const Tensor& b_in) {
  const Shape shape = broadcast_shapes(a_in.shape(), b_in.shape());
  Tensor out = empty(shape, a_in.dtype(), a_in.device());
  if (out.numel() == 0) return out;
  const Tensor a = a_in.expand(shape), b = b_in.expand(shape);
  DeviceGuard guard(out.device().index);
  const cudaStream_t stream = stream_for(out);
  visit_device_dtype(a.dtype(), [&]<typename T>() {
    if constexpr (std::is_same_v<T, bool>) DCAE_FAIL("arithmetic on bool tensors is not supported (", a.str(), ")");
    else dispatch_binary<T>(op, out, a, b, stream);
  });
  return out;
}

Tensor where_forward(const Tensor& cond_in, const Tensor& a_in, const Tensor& b_in) {
  const Shape shape = broadcast_shapes(broadcast_shapes(cond_in.shape(), a_in.shape()), b_in.shape());
  Tensor out = empty(shape, a_in.dtype(), a_in.device());
  if (out.numel() == 0) return out;
  const Tensor cond = cond_in.to(DType::u8).expand(shape), a = a_in.expand(shape), b = b_in.expand(shape);
  DeviceGuard guard(out.device().index);
  const cudaStream_t stream = stream_for(out);
  const StridedLayout<4> layout(shape, {out.strides(), cond.strides(), a.strides(), b.strides()});
  visit_bits(dtype_size(a.dtype()), [&]<typename U>() {
    launch_strided(layout, [&](auto calc, auto n) {
      using Index = decltype(n);
      where_kernel<U, Index><<<grid_for(n), kBlockThreads, 0, stream>>>(
          static_cast<U*>(out.raw_data()), static_cast<const uint8_t*>(cond.raw_data()),
          static_cast<const U*>(a.raw_data()), static_cast<const U*>(b.raw_data()), calc, n);
    });
  });
  check_launch("where_kernel");
  return out;
}

}  // namespace dcae::ops::cuda
