#include "datasets/sampler.h"

#include <numeric>

#include "core/tensor/error.h"
#include "core/tensor/philox.h"

namespace dcae::datasets {

namespace {

// Separate key streams for shuffling and augmentation, so the two never reuse a Philox block.
constexpr uint64_t kShuffleStream = 0x53485546464c4531ull;
constexpr uint64_t kAugmentStream = 0x4155474d454e5431ull;

// Counter = epoch in the high 24 bits, index in the low 40 (datasets up to 10^12 samples).
uint64_t counter(int64_t epoch, int64_t index) {
  return (static_cast<uint64_t>(epoch) << 40) | (static_cast<uint64_t>(index) & ((1ull << 40) - 1));
}

uint64_t random64(const PhiloxBlock& block, int first_word) {
  return (static_cast<uint64_t>(block.v[first_word]) << 32) | block.v[first_word + 1];
}

// Uniform in [0, bound] from random bits (modulo bias (bound + 1) / 2^bits: negligible for image sizes and
// dataset sizes here).
int64_t uniform_upto(uint64_t bits, int64_t bound) {
  return static_cast<int64_t>(bits % (static_cast<uint64_t>(bound) + 1));
}

}  // namespace

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  DCAE_CHECK(n >= 0 && epoch >= 0, "epoch_order: need n >= 0 and epoch >= 0, got n=", n, " epoch=", epoch);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = uniform_upto(random64(philox4x32_10(seed ^ kShuffleStream, counter(epoch, i)), 0), i);
    std::swap(order[i], order[j]);
  }
  return order;
}

std::vector<int64_t> rank_samples(int64_t n, uint64_t seed, int64_t epoch, bool shuffle, int64_t rank,
                                  int64_t world_size, bool equal_sizes) {
  DCAE_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rank_samples: rank ", rank,
             " is outside a world of size ", world_size);
  const std::vector<int64_t> order = epoch_order(n, seed, epoch, shuffle);
  const int64_t used = equal_sizes ? (n / world_size) * world_size : n;
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(used / world_size + 1));
  for (int64_t i = rank; i < used; i += world_size) mine.push_back(order[i]);
  return mine;
}

AugmentDraw augment_draw(uint64_t seed, int64_t epoch, int64_t sample, int64_t max_top, int64_t max_left) {
  const PhiloxBlock block = philox4x32_10(seed ^ kAugmentStream, counter(epoch, sample));
  AugmentDraw draw;
  draw.top = max_top > 0 ? uniform_upto(block.v[0], max_top) : 0;
  draw.left = max_left > 0 ? uniform_upto(block.v[1], max_left) : 0;
  draw.flip = (block.v[2] >> 31) != 0;
  return draw;
}

}  // namespace dcae::datasets
