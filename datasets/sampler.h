// Which samples a rank sees in an epoch, and each sample's augmentation draw. Everything is a pure function of
// (seed, epoch, sample id) through Philox, so it does not depend on thread timing, and resuming is exact.
#pragma once
#include <cstdint>
#include <vector>

namespace dcae::datasets {

// A permutation of [0, n) for (seed, epoch) (Fisher-Yates with Philox draws); the identity when !shuffle.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

// The samples of `rank` among `world_size` for an epoch: every world_size-th entry of epoch_order, starting at
// rank. Ranks are disjoint and together cover the dataset. With equal_sizes, every rank gets n / world_size
// samples (the few left over, different ones each epoch when shuffling, are not used this epoch).
std::vector<int64_t> rank_samples(int64_t n, uint64_t seed, int64_t epoch, bool shuffle, int64_t rank,
                                  int64_t world_size, bool equal_sizes);

struct AugmentDraw {
  int64_t top = 0, left = 0;  // crop origin
  bool flip = false;          // mirror left-right
};

// Random crop origin in [0, max_top] x [0, max_left] and a fair coin for the flip, for one sample in one epoch.
AugmentDraw augment_draw(uint64_t seed, int64_t epoch, int64_t sample, int64_t max_top, int64_t max_left);

}  // namespace dcae::datasets
