// Philox4x32-10 counter-based generator (Salmon et al., SC'11). Element i of a draw uses counter (offset + i/4) and
// lane i%4, so CPU and CUDA produce identical numbers for the same seed and offset, in any thread order.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae {

// One Philox block: 4 random 32-bit words for (key, counter). Usable from host and device code.
#if defined(__CUDACC__)
#define DCAE_HOST_DEVICE __host__ __device__
#else
#define DCAE_HOST_DEVICE
#endif

struct PhiloxBlock {
  uint32_t v[4];
};

DCAE_HOST_DEVICE inline PhiloxBlock philox4x32_10(uint64_t key, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in the open interval (0, 1) from 24 random bits: never 0, so log() is safe, and never 1: the top value
// (2^24 - 0.5) / 2^24 is not a float and rounds up to 1.0, which made erfinv(2u - 1) NaN in trunc_normal_ (one
// draw in 2^24: a 44M-parameter UViT came out with NaN weights), so it is held just below 1.
DCAE_HOST_DEVICE inline float philox_uniform(uint32_t bits) {
  const float u = (static_cast<float>(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);
  return u < 1.0f ? u : 0x1.fffffep-1f;
}

// Seeded stream; each draw of n numbers advances the offset by ceil(n/4) blocks.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves blocks for n numbers and returns the first block's counter.
  uint64_t reserve(int64_t n) {
    const uint64_t start = offset_;
    offset_ += static_cast<uint64_t>((n + 3) / 4);
    return start;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

Generator& default_generator();

// Fill `t` in place (any float dtype, any device with a backend) from `gen`.
void uniform_(Tensor& t, double low, double high, Generator& gen = default_generator());
void normal_(Tensor& t, double mean, double std, Generator& gen = default_generator());
// Normal restricted to [low, high] by inverse-CDF sampling (no rejection, so it stays counter-based).
void trunc_normal_(Tensor& t, double mean, double std, double low, double high, Generator& gen = default_generator());
// Keep-masks for dropout: 1 with probability keep, as u8.
void bernoulli_(Tensor& t, double keep, Generator& gen = default_generator());

Tensor rand(const Shape& shape, Generator& gen = default_generator(), DType dtype = DType::f32);
Tensor randn(const Shape& shape, Generator& gen = default_generator(), DType dtype = DType::f32);

}  // namespace dcae
