// Index arithmetic for strided CUDA kernels, usable from host and device code (so it is tested on the host).
//
// A kernel over a strided N-d layout walks a flat index i in [0, numel) and needs, for each of its K operands, the
// element offset sum_d index_d(i) * stride_k[d]. StridedLayout collapses the shape first (size-1 dims dropped,
// neighbouring dims merged wherever every operand is dense across them), so most layouts end up with rank 1-3,
// and OffsetCalculator then does one division per remaining dim - with a multiply-high instead of a hardware
// divide when the indices fit 32 bits.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor/error.h"
#include "core/tensor/shape.h"

#if defined(__CUDACC__)
#define DCAE_HD __host__ __device__ __forceinline__
#else
#define DCAE_HD inline
#endif

namespace dcae::cuda {

constexpr int kMaxRank = 8;

// Division by a fixed divisor. The 32-bit form (dividends < 2^31) uses the round-up method of Granlund and
// Montgomery: q = (mulhi(n, magic) + n) >> shift.
template <typename Index>
struct IntDivider {
  IntDivider() = default;
  explicit IntDivider(Index d) : divisor(d) {}
  DCAE_HD Index div(Index n) const { return n / divisor; }
  Index divisor = 1;
};

template <>
struct IntDivider<uint32_t> {
  IntDivider() = default;
  explicit IntDivider(uint32_t d) : divisor(d) {
    DCAE_CHECK(d > 0, "IntDivider: division by zero");
    shift = 0;
    while ((uint64_t{1} << shift) < d) ++shift;
    magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  DCAE_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(n, magic);
#else
    const uint32_t high = static_cast<uint32_t>((static_cast<uint64_t>(n) * magic) >> 32);
#endif
    return (high + n) >> shift;
  }
  uint32_t divisor = 1;
  uint32_t magic = 1;
  uint32_t shift = 0;
};

// A shape with K stride sets, collapsed. Dims are stored innermost first.
template <int K>
struct StridedLayout {
  int rank = 0;
  int64_t numel = 1;
  int64_t sizes[kMaxRank] = {};
  int64_t strides[K][kMaxRank] = {};
  int64_t max_offset[K] = {};  // largest element offset reached, per operand

  StridedLayout(const Shape& shape, const std::array<Shape, K>& operand_strides) {
    // Walk dims from the innermost; merge dim d into the collapsed dim below it when every operand has
    // stride[d] == stride[below] * size[below].
    for (int64_t s : shape) numel *= s;
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (shape[d] == 1) continue;
      bool merge = rank > 0;
      for (int k = 0; k < K && merge; ++k)
        merge = operand_strides[k][d] == strides[k][rank - 1] * sizes[rank - 1];
      if (merge) {
        sizes[rank - 1] *= shape[d];
        continue;
      }
      DCAE_CHECK(rank < kMaxRank, "strided CUDA kernels handle at most ", kMaxRank, " non-mergeable dims; shape ",
                 shape_str(shape), " has more");
      sizes[rank] = shape[d];
      for (int k = 0; k < K; ++k) strides[k][rank] = operand_strides[k][d];
      ++rank;
    }
    for (int k = 0; k < K; ++k) {
      max_offset[k] = 0;
      for (int d = 0; d < rank; ++d) max_offset[k] += (sizes[d] - 1) * strides[k][d];
    }
  }

  // True when flat indices and every offset fit the 32-bit fast path.
  bool fits_32bit() const {
    if (numel >= (int64_t{1} << 31)) return false;
    for (int k = 0; k < K; ++k)
      if (max_offset[k] >= (int64_t{1} << 31)) return false;
    return true;
  }
  bool is_contiguous(int k) const { return rank == 0 || (rank == 1 && strides[k][0] == 1); }
};

// Maps a flat index to K element offsets. Index is uint32_t (fast path) or uint64_t.
template <int K, typename Index>
struct OffsetCalculator {
  int rank = 0;
  IntDivider<Index> sizes[kMaxRank];
  Index strides[K][kMaxRank] = {};

  OffsetCalculator() = default;
  explicit OffsetCalculator(const StridedLayout<K>& layout) : rank(layout.rank) {
    for (int d = 0; d < rank; ++d) {
      sizes[d] = IntDivider<Index>(static_cast<Index>(layout.sizes[d]));
      for (int k = 0; k < K; ++k) strides[k][d] = static_cast<Index>(layout.strides[k][d]);
    }
  }

  struct Offsets {
    Index value[K];
  };

  DCAE_HD Offsets get(Index linear) const {
    Offsets out;
    for (int k = 0; k < K; ++k) out.value[k] = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int d = 0; d < kMaxRank; ++d) {
      if (d == rank) break;
      // The outermost dim needs no division: what is left is its index.
      const Index quotient = d + 1 < rank ? sizes[d].div(linear) : 0;
      const Index index = linear - quotient * sizes[d].divisor;
      for (int k = 0; k < K; ++k) out.value[k] += index * strides[k][d];
      linear = quotient;
    }
    return out;
  }
};

}  // namespace dcae::cuda
