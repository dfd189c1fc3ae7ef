#include "core/tensor/cuda/copy_kernels.h"

#include <cstring>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::cuda {

namespace {

template <typename D, typename S, typename Index>
__global__ void copy_kernel(D* dst, const S* src, OffsetCalculator<2, Index> calc, Index n) {
  for (Index i = global_thread<Index>(); i < n; i += grid_stride<Index>()) {
    const auto at = calc.get(i);
    dst[at.value[0]] = convert<D>(src[at.value[1]]);
  }
}

template <typename D, typename S>
void launch_copy(const Tensor& dst, const Tensor& src, const StridedLayout<2>& layout, cudaStream_t stream) {
  auto* d = static_cast<D*>(dst.raw_data());
  const auto* s = static_cast<const S*>(src.raw_data());
  launch_strided(layout, [&](auto calc, auto n) {
    using Index = decltype(n);
    copy_kernel<D, S, Index><<<grid_for(n), kBlockThreads, 0, stream>>>(d, s, calc, n);
  });
  check_launch("copy_kernel");
}

// Contiguous fill with 16-byte stores where the pointer allows.
template <typename U>
__global__ void fill_contiguous_kernel(U* dst, U value, int64_t n) {
  int64_t head = 0;
  if (aligned16(dst)) {
    Vec16<U> packed;
#pragma unroll
    for (int k = 0; k < Vec16<U>::kCount; ++k) packed.v[k] = value;
    const int64_t vectors = n / Vec16<U>::kCount;
    auto* out = reinterpret_cast<Vec16<U>*>(dst);
    for (int64_t i = global_thread<int64_t>(); i < vectors; i += grid_stride<int64_t>()) out[i] = packed;
    head = vectors * Vec16<U>::kCount;
  }
  for (int64_t i = head + global_thread<int64_t>(); i < n; i += grid_stride<int64_t>()) dst[i] = value;
}

template <typename U, typename Index>
__global__ void fill_strided_kernel(U* dst, U value, OffsetCalculator<1, Index> calc, Index n) {
  for (Index i = global_thread<Index>(); i < n; i += grid_stride<Index>()) dst[calc.get(i).value[0]] = value;
}

template <typename D, typename S, typename Index>
__global__ void add_kernel(D* dst, const S* src, double alpha, OffsetCalculator<2, Index> calc, Index n) {
  for (Index i = global_thread<Index>(); i < n; i += grid_stride<Index>()) {
    const auto at = calc.get(i);
    // explicit roundings: no fused multiply-add, so the result is the CPU's
    const double sum = __dadd_rn(device_to_double(dst[at.value[0]]), __dmul_rn(alpha, device_to_double(src[at.value[1]])));
    dst[at.value[0]] = device_from_double<D>(sum);
  }
}

template <typename D, typename S>
void launch_add(const Tensor& dst, const Tensor& src, double alpha, cudaStream_t stream) {
  const StridedLayout<2> layout(dst.shape(), {dst.strides(), src.strides()});
  auto* d = static_cast<D*>(dst.raw_data());
  const auto* s = static_cast<const S*>(src.raw_data());
  launch_strided(layout, [&](auto calc, auto n) {
    using Index = decltype(n);
    add_kernel<D, S, Index><<<grid_for(n), kBlockThreads, 0, stream>>>(d, s, alpha, calc, n);
  });
  check_launch("add_kernel");
}

}  // namespace

void copy_on_device(const Tensor& dst, const Tensor& src) {
  DCAE_CHECK(dst.shape() == src.shape(), "copy from ", src.str(), " into ", dst.str(), ": shapes differ");
  DCAE_CHECK(dst.device() == src.device(), "copy_on_device needs one device, got ", src.str(), " and ", dst.str());
  if (dst.numel() == 0) return;
  DeviceGuard guard(dst.device().index);
  const cudaStream_t stream = stream_for(dst);
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    DCAE_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const StridedLayout<2> layout(dst.shape(), {dst.strides(), src.strides()});
  if (dst.dtype() == src.dtype()) {
    visit_bits(dtype_size(dst.dtype()), [&]<typename U>() { launch_copy<U, U>(dst, src, layout, stream); });
    return;
  }
  visit_device_dtype(dst.dtype(), [&]<typename D>() {
    visit_device_dtype(src.dtype(), [&]<typename S>() {
      if constexpr (!std::is_same_v<D, S>) launch_copy<D, S>(dst, src, layout, stream);
    });
  });
}

void fill_on_device(const Tensor& dst, double value) {
  if (dst.numel() == 0) return;
  DeviceGuard guard(dst.device().index);
  const cudaStream_t stream = stream_for(dst);
  const size_t size = dtype_size(dst.dtype());
  uint64_t bits = 0;
  visit_dtype(dst.dtype(), [&]<typename T>() {
    const T v = from_double<T>(value);
    std::memcpy(&bits, &v, sizeof(T));
  });
  if (dst.is_contiguous()) {
    unsigned char bytes[8];
    std::memcpy(bytes, &bits, 8);
    bool uniform = true;
    for (size_t k = 1; k < size; ++k) uniform = uniform && bytes[k] == bytes[0];
    if (uniform) {
      DCAE_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), bytes[0], dst.nbytes(), stream));
      return;
    }
  }
  visit_bits(size, [&]<typename U>() {
    U pattern;
    std::memcpy(&pattern, &bits, sizeof(U));
    auto* d = static_cast<U*>(dst.raw_data());
    if (dst.is_contiguous()) {
      fill_contiguous_kernel<U><<<grid_for(dst.numel()), kBlockThreads, 0, stream>>>(d, pattern, dst.numel());
      check_launch("fill_contiguous_kernel");
      return;
    }
    const StridedLayout<1> layout(dst.shape(), {dst.strides()});
    launch_strided(layout, [&](auto calc, auto n) {
      using Index = decltype(n);
      fill_strided_kernel<U, Index><<<grid_for(n), kBlockThreads, 0, stream>>>(d, pattern, calc, n);
    });
    check_launch("fill_strided_kernel");
  });
}

void add_on_device(const Tensor& dst, const Tensor& src, double alpha) {
  DCAE_CHECK(dst.shape() == src.shape(), "add_ of ", src.str(), " into ", dst.str(), ": shapes differ");
  DCAE_CHECK(dst.device() == src.device(), "add_ needs one device, got ", src.str(), " and ", dst.str());
  DCAE_CHECK(dst.dtype() != DType::boolean && src.dtype() != DType::boolean, "add_ of ", src.str(), " into ",
             dst.str(), ": bool tensors do not add");
  if (dst.numel() == 0) return;
  DeviceGuard guard(dst.device().index);
  const cudaStream_t stream = stream_for(dst);
  if (is_floating(dst.dtype()) && is_floating(src.dtype())) {
    visit_device_float(dst.dtype(), "add_", [&]<typename D>() {
      visit_device_float(src.dtype(), "add_", [&]<typename S>() { launch_add<D, S>(dst, src, alpha, stream); });
    });
    return;
  }
  if (dst.dtype() != src.dtype()) {  // integer pairs: convert first, then add within one dtype
    add_on_device(dst, src.to(dst.dtype()), alpha);
    return;
  }
  visit_device_dtype(dst.dtype(), [&]<typename T>() {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) launch_add<T, T>(dst, src, alpha, stream);
  });
}

}  // namespace dcae::cuda
