// Spatial kernels (pixel (un)shuffle, channel group sum / repeat, nearest upsampling, pad) on the GPU against the
// CPU kernels, and the DC-AE shortcuts with their gradients.
#include <gtest/gtest.h>

#include "ops/cpu/spatial.h"
#include "ops/dispatch.h"
#include "ops/spatial.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::gpu_equals_cpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;
using testing::random_values;
using testing::tolerance_for;

class CudaSpatial : public testing::CudaTest {};

constexpr DType kMovedDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i64, DType::u8};
constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

TEST_F(CudaSpatial, PixelShuffleAndUnshuffleMoveElementsExactly) {
  for (DType dtype : kMovedDtypes) {
    for (int64_t r : {1, 2, 4}) {
      const Tensor x = random_values({2, 4 * r, 3 * r, 3}, 1, dtype);  // odd channel count
      EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), pixel_unshuffle_forward, x.to(gpu()), r),
                                 ops::cpu::pixel_unshuffle_forward(x, r)))
          << dtype << " r " << r;
      const Tensor y = random_values({3, 5, 2, 3 * r * r}, 2, dtype);
      EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), pixel_shuffle_forward, y.to(gpu()), r),
                                 ops::cpu::pixel_shuffle_forward(y, r)))
          << dtype << " r " << r;
    }
  }
  // A non-contiguous input is packed first.
  const Tensor z = random_tensor({2, 4, 6, 8}, 3, DType::f32);
  EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::pixel_unshuffle(in[0].transpose(1, 2), 2); },
                                       {z}, {0, 0}));
}

TEST_F(CudaSpatial, ChannelGroupSumAndRepeatMatchCpu) {
  for (DType dtype : kFloatDtypes) {
    const Tensor x = random_tensor({2, 3, 5, 12}, 4, dtype);
    for (int64_t out_channels : {1, 3, 4, 12}) {
      const double scale = 1.0 / static_cast<double>(12 / out_channels);
      EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), channel_group_sum_forward, x.to(gpu()), out_channels, scale),
                                  ops::cpu::channel_group_sum_forward(x, out_channels, scale), tolerance_for(dtype)))
          << dtype << " -> " << out_channels;
    }
    const Tensor y = random_tensor({2, 3, 5, 3}, 5, dtype);
    for (int64_t out_channels : {3, 6, 12}) {
      for (double scale : {1.0, 0.25}) {
        EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), channel_repeat_forward, y.to(gpu()), out_channels, scale),
                                    ops::cpu::channel_repeat_forward(y, out_channels, scale), tolerance_for(dtype)))
            << dtype << " -> " << out_channels;
      }
    }
  }
}

TEST_F(CudaSpatial, UpsampleNearestForwardAndBackward) {
  // Channel counts chosen so whole pixels move as 16-, 8-, 4-, 2- and 1-byte units.
  const std::vector<std::pair<DType, int64_t>> layouts = {{DType::f32, 8}, {DType::f32, 3}, {DType::bf16, 8},
                                                          {DType::bf16, 1}, {DType::u8, 1},  {DType::f64, 5},
                                                          {DType::f16, 6}};
  for (const auto& [dtype, channels] : layouts) {
    for (int64_t s : {1, 2, 3}) {
      const Tensor x = random_values({2, 5, 4, channels}, 6, dtype);
      EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), upsample_nearest_forward, x.to(gpu()), s),
                                 ops::cpu::upsample_nearest_forward(x, s)))
          << dtype << " C " << channels << " s " << s;
      if (!is_floating(dtype)) continue;
      const Tensor g = random_tensor({2, 5 * s, 4 * s, channels}, 7, dtype);
      EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), upsample_nearest_backward, g.to(gpu()), s),
                                  ops::cpu::upsample_nearest_backward(g, s), tolerance_for(dtype)))
          << dtype << " C " << channels << " s " << s;
    }
  }
  // A view that starts one element in: the unit shrinks to keep loads aligned.
  const Tensor base = random_tensor({1 + 2 * 3 * 4 * 8}, 8, DType::f32);
  EXPECT_TRUE(testing::forward_matches(
      [](const auto& in) { return ops::upsample_nearest(in[0].narrow(0, 1, 192).view({2, 3, 4, 8}), 2); }, {base},
      {0, 0}));
}

TEST_F(CudaSpatial, PadAndCropWithValues) {
  const std::vector<ops::Padding2d> paddings = {{1, 2, 3, 0}, {0, 0, 0, 0}, {-1, 2, 1, -2}, {-2, -1, -1, -1}, {3, 3, 3, 3}};
  for (DType dtype : kMovedDtypes) {
    const Tensor x = random_values({2, 5, 6, 4}, 9, dtype);
    for (const ops::Padding2d& p : paddings) {
      for (double value : {0.0, 2.5}) {
        EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), pad_forward, x.to(gpu()), p, value),
                                   ops::cpu::pad_forward(x, p, value)))
            << dtype << " pad " << p.top << "," << p.bottom << "," << p.left << "," << p.right;
      }
    }
  }
  const Tensor x = random_tensor({2, 5, 6, 3}, 10, DType::f32);
  EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::pad(in[0], {1, -1, 2, 0}, 0.5); }, {x},
                                       {true}, tolerance_for(DType::f32)));
}

TEST_F(CudaSpatial, DcaeShortcutsAndTheirGradients) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = random_tensor({2, 8, 8, 16}, 11, dtype);
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::downsample_shortcut(in[0], 32, 2); }, {x},
                                         {true}, tolerance_for(dtype)))
        << dtype;
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::upsample_shortcut(in[0], 8, 2); }, {x},
                                         {true}, tolerance_for(dtype)))
        << dtype;
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::upsample_nearest2x(in[0]); }, {x}, {true},
                                         tolerance_for(dtype)))
        << dtype;
    EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::downsample_shortcut(in[0], 64, 2); }, {x},
                                         tolerance_for(dtype)))
        << dtype;
  }
}

}  // namespace
}  // namespace dcae
