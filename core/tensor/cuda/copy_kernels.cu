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

// Batched transposes through shared memory: src[b][r][c] at b*src_batch + r*cols + c (c fastest) to dst[b][c][r]
// at b*dst_batch + c*rows + r (r fastest). The generic copy reads or writes one side with a stride of a whole row,
// a sector per element; a 3x3 filter changing between KCRS and KRSC (what every cuDNN convolution on our
// PyTorch-layout weights pays) is such a copy with rows of 9. Three shapes, none with a division per element
// (index math, not memory, bounded the first version at ~390 GB/s):
//   - rows of at most kNarrow elements: a block copies 256 whole src rows (one contiguous chunk) into shared memory
//     and writes 256-element runs of each dst row;
//   - at most kNarrow rows: the mirror image (256 columns of every src row in, one contiguous dst chunk out);
//   - otherwise 32x32 tiles.
constexpr int kNarrow = 16, kTile = 32;

template <typename U>
__global__ void transpose_narrow_cols_kernel(U* dst, const U* src, int64_t rows, int cols, int64_t src_batch,
                                             int64_t dst_batch, int64_t chunks_per_batch, int64_t chunks) {
  __shared__ U tile[kBlockThreads * kNarrow];
  for (int64_t t = blockIdx.x; t < chunks; t += gridDim.x) {
    const int64_t b = t / chunks_per_batch, r0 = t % chunks_per_batch * kBlockThreads;
    const int nr = static_cast<int>(rows - r0 < kBlockThreads ? rows - r0 : kBlockThreads);
    const U* in = src + b * src_batch + r0 * cols;
    for (int j = threadIdx.x; j < nr * cols; j += kBlockThreads) tile[j] = in[j];
    __syncthreads();
    U* out = dst + b * dst_batch + r0;
    if (static_cast<int>(threadIdx.x) < nr)
      for (int c = 0; c < cols; ++c) out[c * rows + threadIdx.x] = tile[threadIdx.x * cols + c];
    __syncthreads();  // the tile is reused by this block's next chunk
  }
}

template <typename U>
__global__ void transpose_narrow_rows_kernel(U* dst, const U* src, int rows, int64_t cols, int64_t src_batch,
                                             int64_t dst_batch, int64_t chunks_per_batch, int64_t chunks) {
  __shared__ U tile[kBlockThreads * kNarrow];
  for (int64_t t = blockIdx.x; t < chunks; t += gridDim.x) {
    const int64_t b = t / chunks_per_batch, c0 = t % chunks_per_batch * kBlockThreads;
    const int nc = static_cast<int>(cols - c0 < kBlockThreads ? cols - c0 : kBlockThreads);
    const U* in = src + b * src_batch + c0;
    if (static_cast<int>(threadIdx.x) < nc)
      for (int r = 0; r < rows; ++r) tile[threadIdx.x * rows + r] = in[r * cols + threadIdx.x];
    __syncthreads();
    U* out = dst + b * dst_batch + c0 * rows;
    for (int j = threadIdx.x; j < nc * rows; j += kBlockThreads) out[j] = tile[j];
    __syncthreads();
  }
}

template <typename U>
__global__ void transpose_tiles_kernel(U* dst, const U* src, int64_t rows, int64_t cols, int64_t src_batch,
                                       int64_t dst_batch, int64_t tiles_r, int64_t tiles_c, int64_t tiles) {
  __shared__ U tile[kTile][kTile + 1];  // odd pitch: column reads spread over the banks
  const int tx = threadIdx.x % kTile, ty = threadIdx.x / kTile;
  constexpr int kRowsPerPass = kBlockThreads / kTile;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t b = t / (tiles_r * tiles_c), within = t % (tiles_r * tiles_c);
    const int64_t r0 = within / tiles_c * kTile, c0 = within % tiles_c * kTile;
    const U* in = src + b * src_batch;
    U* out = dst + b * dst_batch;
#pragma unroll
    for (int j = ty; j < kTile; j += kRowsPerPass)
      if (r0 + j < rows && c0 + tx < cols) tile[j][tx] = in[(r0 + j) * cols + c0 + tx];
    __syncthreads();
#pragma unroll
    for (int j = ty; j < kTile; j += kRowsPerPass)
      if (c0 + j < cols && r0 + tx < rows) out[(c0 + j) * rows + r0 + tx] = tile[tx][j];
    __syncthreads();
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
  auto* d = static_cast<U*>(dst.raw_data());
  const auto* s = static_cast<const U*>(src.raw_data());
  const auto grid = [](int64_t work) { return static_cast<unsigned>(std::min<int64_t>(work, int64_t{1} << 20)); };
  if (shape.cols <= kNarrow || shape.rows <= kNarrow) {
    const bool narrow_cols = shape.cols <= kNarrow;
    const int64_t long_side = narrow_cols ? shape.rows : shape.cols;
    const int64_t per_batch = (long_side + kBlockThreads - 1) / kBlockThreads, chunks = per_batch * shape.batch;
    if (narrow_cols)
      transpose_narrow_cols_kernel<U><<<grid(chunks), kBlockThreads, 0, stream>>>(
          d, s, shape.rows, static_cast<int>(shape.cols), shape.src_batch, shape.dst_batch, per_batch, chunks);
    else
      transpose_narrow_rows_kernel<U><<<grid(chunks), kBlockThreads, 0, stream>>>(
          d, s, static_cast<int>(shape.rows), shape.cols, shape.src_batch, shape.dst_batch, per_batch, chunks);
    check_launch("transpose_narrow_kernel");
    return;
  }
  const int64_t tiles_r = (shape.rows + kTile - 1) / kTile, tiles_c = (shape.cols + kTile - 1) / kTile;
  const int64_t tiles = tiles_r * tiles_c * shape.batch;
  transpose_tiles_kernel<U><<<grid(tiles), kBlockThreads, 0, stream>>>(d, s, shape.rows, shape.cols, shape.src_batch,
                                                                       shape.dst_batch, tiles_r, tiles_c, tiles);
  check_launch("transpose_tiles_kernel");
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
