// The index arithmetic of the strided CUDA kernels, checked on the host (the same header compiles for both).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "core/tensor/cuda/indexing.h"

namespace dcae::cuda {
namespace {

TEST(IntDivider, MatchesHardwareDivisionBelow2To31) {
  std::mt19937_64 rng(7);
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 2000; ++d) divisors.push_back(d);
  for (int shift = 0; shift < 31; ++shift) {
    const uint32_t p = 1u << shift;
    for (uint32_t d : {p - 1, p, p + 1})
      if (d > 0 && d < (1u << 31)) divisors.push_back(d);
  }
  for (int i = 0; i < 2000; ++i) divisors.push_back(static_cast<uint32_t>(rng() % ((1u << 31) - 1)) + 1);
  for (uint32_t d : divisors) {
    const IntDivider<uint32_t> divider(d);
    std::vector<uint32_t> dividends = {0, 1, d - 1, d, d + 1, 2 * d - 1, (1u << 31) - 1, (1u << 31) - 2};
    for (int i = 0; i < 200; ++i) dividends.push_back(static_cast<uint32_t>(rng() % (1u << 31)));
    for (uint32_t n : dividends) {
      if (n >= (1u << 31)) continue;
      ASSERT_EQ(divider.div(n), n / d) << n << " / " << d;
    }
  }
}

TEST(StridedLayout, CollapsesDenseDimsAndDropsOnes) {
  // Contiguous [2, 3, 4] for both operands: one dim of 24.
  const StridedLayout<2> dense({2, 3, 4}, {Shape{12, 4, 1}, Shape{12, 4, 1}});
  EXPECT_EQ(dense.rank, 1);
  EXPECT_EQ(dense.sizes[0], 24);
  EXPECT_TRUE(dense.is_contiguous(0));
  // A transposed operand keeps two dims; size-1 dims vanish.
  const StridedLayout<2> transposed({3, 1, 4}, {Shape{4, 4, 1}, Shape{1, 99, 3}});
  EXPECT_EQ(transposed.rank, 2);
  EXPECT_EQ(transposed.sizes[0], 4);
  EXPECT_EQ(transposed.sizes[1], 3);
  EXPECT_EQ(transposed.strides[1][0], 3);
  EXPECT_EQ(transposed.strides[1][1], 1);
  // A broadcast bias over NHWC: [N*H*W, C] with stride 0 for the bias rows.
  const StridedLayout<2> bias({2, 5, 7, 16}, {Shape{560, 112, 16, 1}, Shape{0, 0, 0, 1}});
  EXPECT_EQ(bias.rank, 2);
  EXPECT_EQ(bias.sizes[0], 16);
  EXPECT_EQ(bias.sizes[1], 70);
  EXPECT_EQ(bias.strides[1][1], 0);
  EXPECT_EQ(bias.max_offset[0], 1119);
  EXPECT_EQ(bias.max_offset[1], 15);
  EXPECT_TRUE(bias.fits_32bit());
  // Offsets past 2^31 need the 64-bit path even for few elements.
  const StridedLayout<1> far({3}, {Shape{int64_t{1} << 30}});
  EXPECT_FALSE(far.fits_32bit());
}

TEST(StridedLayout, MoreThanEightUnmergeableDimsIsAnError) {
  Shape shape(9, 2), strides(9);
  for (int d = 0; d < 9; ++d) strides[d] = int64_t{1} << (2 * (8 - d));  // gaps everywhere: nothing merges
  try {
    StridedLayout<1> layout(shape, {strides});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 2, 2, 2, 2, 2, 2, 2, 2]"), std::string::npos) << e.what();
  }
  Shape eight(8, 2), eight_strides(8);
  for (int d = 0; d < 8; ++d) eight_strides[d] = int64_t{1} << (2 * (7 - d));
  EXPECT_EQ(StridedLayout<1>(eight, {eight_strides}).rank, 8);
}

template <typename Index>
void expect_offsets_match(const Shape& shape, const std::array<Shape, 2>& strides) {
  const StridedLayout<2> layout(shape, strides);
  const OffsetCalculator<2, Index> calc(layout);
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  for (int64_t flat = 0; flat < numel; ++flat) {
    int64_t rest = flat, expected[2] = {0, 0};
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      const int64_t i = rest % shape[d];
      rest /= shape[d];
      for (int k = 0; k < 2; ++k) expected[k] += i * strides[k][d];
    }
    const auto got = calc.get(static_cast<Index>(flat));
    ASSERT_EQ(static_cast<int64_t>(got.value[0]), expected[0]) << "flat " << flat;
    ASSERT_EQ(static_cast<int64_t>(got.value[1]), expected[1]) << "flat " << flat;
  }
}

TEST(OffsetCalculator, MatchesNaiveOffsets) {
  // permuted, sliced (step 2), broadcast and size-1 dims, in both index widths
  const std::vector<std::pair<Shape, std::array<Shape, 2>>> cases = {
      {{2, 3, 4}, {Shape{12, 4, 1}, Shape{1, 8, 2}}},
      {{5, 1, 7}, {Shape{7, 7, 1}, Shape{14, 3, 2}}},
      {{3, 4, 5, 6}, {Shape{120, 30, 6, 1}, Shape{0, 6, 0, 1}}},
      {{2, 3, 2, 3, 2, 3, 2, 3}, {Shape{648, 216, 108, 36, 18, 6, 3, 1}, Shape{1, 2, 6, 12, 36, 72, 216, 432}}},
      {{1}, {Shape{1}, Shape{5}}},
  };
  for (const auto& [shape, strides] : cases) {
    expect_offsets_match<uint32_t>(shape, strides);
    expect_offsets_match<uint64_t>(shape, strides);
  }
}

}  // namespace
}  // namespace dcae::cuda
