#include "core/tensor/cuda/copy_kernels.h"

#include <algorithm>
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

// Batched transpose through shared memory: src[b][r][c] at b*src_batch + r*cols + c (c fastest) to dst[b][c][r]
// at b*dst_batch + c*rows + r (r fastest). The generic copy reads or writes one side with a stride of a whole row,
// a sector per element: a 3x3 filter changing between KCRS and KRSC (what every cuDNN convolution on our
// PyTorch-layout weights pays) took ~30 us that way. A tile holds up to 4096 elements, shaped to the problem
// (64x64, or all of a short side: 455x9 for a 3x3 filter), and threads walk it linearly on both sides, so reads
// and writes are coalesced even when rows are 9 elements long; each thread keeps its 16 loads in flight at once.
constexpr int kTransposeTileElements = 4096, kTransposePerThread = kTransposeTileElements / kBlockThreads;

template <typename U>
__global__ void batched_transpose_kernel(U* dst, const U* src, int64_t rows, int64_t cols, int64_t src_batch,
                                         int64_t dst_batch, int tile_r, int tile_c, int64_t tiles_r,
                                         int64_t tiles_c, int64_t tiles) {
  extern __shared__ __align__(16) unsigned char transpose_tile[];
  U* tile = reinterpret_cast<U*>(transpose_tile);
  const int pitch = tile_c + 1;  // odd pitch: column reads spread over the banks
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t b = t / (tiles_r * tiles_c), within = t % (tiles_r * tiles_c);
    const int64_t r0 = within / tiles_c * tile_r, c0 = within % tiles_c * tile_c;
    const int nr = static_cast<int>(rows - r0 < tile_r ? rows - r0 : tile_r);
    const int nc = static_cast<int>(cols - c0 < tile_c ? cols - c0 : tile_c);
    const int n = nr * nc;
    const U* in = src + b * src_batch + r0 * cols + c0;
    U* out = dst + b * dst_batch + c0 * rows + r0;
    U v[kTransposePerThread];
#pragma unroll
    for (int k = 0; k < kTransposePerThread; ++k) {
      const int i = threadIdx.x + k * kBlockThreads;
      if (i < n) v[k] = in[(i / nc) * cols + i % nc];
    }
#pragma unroll
    for (int k = 0; k < kTransposePerThread; ++k) {
      const int i = threadIdx.x + k * kBlockThreads;
      if (i < n) tile[(i / nc) * pitch + i % nc] = v[k];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTransposePerThread; ++k) {
      const int i = threadIdx.x + k * kBlockThreads;
      if (i < n) v[k] = tile[(i % nr) * pitch + i / nr];
    }
#pragma unroll
    for (int k = 0; k < kTransposePerThread; ++k) {
      const int i = threadIdx.x + k * kBlockThreads;
      if (i < n) out[(i / nr) * rows + i % nr] = v[k];
    }
    __syncthreads();  // the tile is reused by this block's next iteration
  }
}

// When the collapsed copy (same dtype) is a batched transpose of dense 2-D planes: returns rows/cols and batch
// strides in src's terms (see batched_transpose_kernel).
struct TransposeShape {
  int64_t rows = 0, cols = 0, batch = 1, src_batch = 0, dst_batch = 0;
};

bool as_batched_transpose(const StridedLayout<2>& layout, TransposeShape& shape) {
  if (layout.rank != 2 && layout.rank != 3) return false;
  const int64_t* dst = layout.strides[0];
  const int64_t* src = layout.strides[1];
  const int64_t p = layout.sizes[0], q = layout.sizes[1];
  if (dst[0] == 1 && dst[1] == p && src[0] == q && src[1] == 1) {
    shape.rows = p, shape.cols = q;  // src rows run along dim 0, its fast dim is dim 1
  } else if (dst[0] == q && dst[1] == 1 && src[0] == 1 && src[1] == p) {
    shape.rows = q, shape.cols = p;
  } else {
    return false;
  }
  if (layout.rank == 3) shape.batch = layout.sizes[2], shape.src_batch = src[2], shape.dst_batch = dst[2];
  return true;
}

template <typename U>
void launch_batched_transpose(const Tensor& dst, const Tensor& src, const TransposeShape& shape,
                              cudaStream_t stream) {
  // A short side goes into the tile whole; otherwise 64x64.
  constexpr int64_t kSide = 64;
  int64_t tile_r = kSide, tile_c = kSide;
  if (shape.rows < kSide) {
    tile_r = shape.rows, tile_c = std::min(shape.cols, kTransposeTileElements / tile_r);
  } else if (shape.cols < kSide) {
    tile_c = shape.cols, tile_r = std::min(shape.rows, kTransposeTileElements / tile_c);
  }
  const int64_t tiles_r = (shape.rows + tile_r - 1) / tile_r, tiles_c = (shape.cols + tile_c - 1) / tile_c;
  const int64_t tiles = tiles_r * tiles_c * shape.batch;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(tiles, int64_t{1} << 20));
  const size_t shared_bytes = static_cast<size_t>(tile_r * (tile_c + 1)) * sizeof(U);
  batched_transpose_kernel<U><<<blocks, kBlockThreads, shared_bytes, stream>>>(
      static_cast<U*>(dst.raw_data()), static_cast<const U*>(src.raw_data()), shape.rows, shape.cols,
      shape.src_batch, shape.dst_batch, static_cast<int>(tile_r), static_cast<int>(tile_c), tiles_r, tiles_c, tiles);
  check_launch("batched_transpose_kernel");
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
    TransposeShape transpose;
    const bool transposes = as_batched_transpose(layout, transpose);
    visit_bits(dtype_size(dst.dtype()), [&]<typename U>() {
      if (transposes)
        launch_batched_transpose<U>(dst, src, transpose, stream);
      else
        launch_copy<U, U>(dst, src, layout, stream);
    });
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
