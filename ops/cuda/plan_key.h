// Keys of the per-thread plan caches of the library-backed kernels (cuBLASLt GEMMs, cuDNN convolutions): a fixed
// list of the integers a plan depends on - sizes, strides, dtype, pointer alignment, settings - and its hash.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

namespace dcae::ops::cuda {

template <size_t N>
struct PlanKey {
  std::array<int64_t, N> fields;
  bool operator==(const PlanKey& other) const { return fields == other.fields; }
};

template <size_t N>
struct PlanKeyHash {
  size_t operator()(const PlanKey<N>& key) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    for (int64_t f : key.fields) h = (h ^ static_cast<uint64_t>(f)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

// The largest power of two up to `cap` that divides the address (libraries pick kernels by operand alignment).
inline int64_t pointer_alignment(const void* ptr, int64_t cap) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  int64_t alignment = cap;
  while (alignment > 1 && address % static_cast<uintptr_t>(alignment) != 0) alignment /= 2;
  return alignment;
}

}  // namespace dcae::ops::cuda
