#include "datasets/image_resize.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/datasets/datasets_testing.h"

namespace dcae::datasets {
namespace {

using testing::synthetic_image;
using testing::throws_with;

// A [h, w, 3] image whose three channels all hold `grey` (row-major).
Tensor grey_image(const std::vector<int>& grey, int64_t h, int64_t w) {
  std::vector<uint8_t> rgb;
  for (int v : grey)
    for (int c = 0; c < 3; ++c) rgb.push_back(static_cast<uint8_t>(v));
  return from_vector(rgb, {h, w, 3});
}

std::vector<int> first_channel(const Tensor& image) {
  const auto v = image.to_vector<int>();
  std::vector<int> out;
  for (size_t i = 0; i < v.size(); i += 3) out.push_back(v[i]);
  return out;
}

TEST(ImageResize, DmcropHalvesWithABoxFilterThenCropsTheCentre) {
  // 4x6 -> target 2: the short side 4 >= 2*2, so one box halving to 2x3 (each output the rounded mean of a 2x2
  // block, rounding after the horizontal and then the vertical pass), no bicubic step (short side already 2),
  // then the centre crop keeps columns (3-2)//2 = 0 and 1. By hand:
  //   horizontal: [15 35 55 / 16 36 56 / 50 255 8 / 50 251 10]; vertical: [16 36 56 / 50 253 9].
  const Tensor image = grey_image({10, 20, 30, 40, 50, 60,
                                   11, 21, 31, 41, 51, 61,
                                   100, 0, 255, 255, 7, 8,
                                   0, 100, 250, 251, 9, 10}, 4, 6);
  EXPECT_EQ(first_channel(resize_image(image, 2, 3, ResizeFilter::box)), (std::vector<int>{16, 36, 56, 50, 253, 9}));
  const Tensor cropped = dmcrop(image, 2);
  EXPECT_EQ(cropped.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(first_channel(cropped), (std::vector<int>{16, 36, 50, 253}));
}

TEST(ImageResize, BicubicShrinkMatchesTheHandComputedAntialiasedWeights) {
  // Width 4 -> 2 (scale 2): the a=-0.5 cubic is stretched by 2, so output 0 (centre 1.0) weights inputs 0..3 by
  // k(-0.25), k(0.25), k(0.75), k(1.25) = 0.8671875, 0.8671875, 0.2265625, -0.0703125 (sum 1.890625):
  //   (0.8671875*(10+50) + 0.2265625*200 - 0.0703125*90) / 1.890625 = 48.14 -> 48
  // and output 1 (centre 3.0) mirrors them: (-0.0703125*10 + 0.2265625*50 + 0.8671875*(200+90)) / 1.890625
  //   = 138.64 -> 139.
  const Tensor row = grey_image({10, 50, 200, 90}, 1, 4);
  EXPECT_EQ(first_channel(resize_image(row, 1, 2, ResizeFilter::bicubic)), (std::vector<int>{48, 139}));
  // The same along the height (the vertical pass).
  const Tensor column = grey_image({10, 50, 200, 90}, 4, 1);
  EXPECT_EQ(first_channel(resize_image(column, 2, 1, ResizeFilter::bicubic)), (std::vector<int>{48, 139}));
}

TEST(ImageResize, ConstantImagesStayConstantAndSameSizeIsACopy) {
  const Tensor flat = full({7, 11, 3}, 77.0, DType::u8);
  for (auto filter : {ResizeFilter::box, ResizeFilter::bicubic})
    for (auto [h, w] : {std::pair<int64_t, int64_t>{3, 5}, {13, 29}, {7, 4}}) {
      const Tensor out = resize_image(flat, h, w, filter);
      EXPECT_EQ(out.shape(), (Shape{h, w, 3}));
      for (uint8_t v : out.to_vector<uint8_t>()) ASSERT_EQ(v, 77);
    }
  const Tensor image = synthetic_image(6, 9, 1);
  const Tensor same = resize_image(image, 6, 9, ResizeFilter::bicubic);
  EXPECT_EQ(same.to_vector<uint8_t>(), image.to_vector<uint8_t>());
  EXPECT_NE(same.raw_data(), image.raw_data());
}

TEST(ImageResize, DmcropShapesForOddAndExtremeAspectRatios) {
  for (auto [h, w, s] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {37, 53, 16}, {16, 16, 16}, {5, 9, 8}, {300, 17, 12}, {65, 64, 16}, {1, 1, 4}}) {
    const Tensor out = dmcrop(synthetic_image(h, w, h * w), s);
    EXPECT_EQ(out.shape(), (Shape{s, s, 3})) << h << "x" << w << " -> " << s;
    EXPECT_TRUE(out.is_contiguous());
  }
  // An image already at the size is returned unchanged.
  const Tensor square = synthetic_image(8, 8, 3);
  EXPECT_EQ(dmcrop(square, 8).to_vector<uint8_t>(), square.to_vector<uint8_t>());
  // The short side lands exactly on the target; the long side scales with it (2x5 -> 4x10, an upscale).
  EXPECT_EQ(resize_short_side(synthetic_image(2, 5, 1), 4).shape(), (Shape{4, 10, 3}));
  // 64x200 at 16: halved twice (64 -> 32 -> 16, 200 -> 100 -> 50), no bicubic step needed.
  EXPECT_EQ(resize_short_side(synthetic_image(64, 200, 1), 16).shape(), (Shape{16, 50, 3}));
}

TEST(ImageResize, ResizeModeKeepsTheWholeImage) {
  // A left-dark, right-bright image: resize keeps both halves, dmcrop of a wide image cuts the sides.
  std::vector<int> grey;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 16; ++x) grey.push_back(x < 4 ? 0 : (x >= 12 ? 255 : 128));
  const Tensor wide = grey_image(grey, 4, 16);
  const auto resized = first_channel(prepare_image(wide, 4, CropMethod::resize));
  EXPECT_EQ(resized.size(), 16u);
  EXPECT_LT(resized[0], 30);
  EXPECT_GT(resized[3], 225);
  const auto cropped = first_channel(prepare_image(wide, 4, CropMethod::dmcrop));
  for (int v : cropped) EXPECT_EQ(v, 128);
}

TEST(ImageResize, CenterCropOffsetsRoundDown) {
  const Tensor image = synthetic_image(5, 8, 9);
  const Tensor crop = center_crop(image, 2, 3);  // top (5-2)//2 = 1, left (8-3)//2 = 2
  EXPECT_EQ(crop.to_vector<uint8_t>(), image.narrow(0, 1, 2).narrow(1, 2, 3).contiguous().to_vector<uint8_t>());
}

TEST(ImageResize, ErrorsNameTheShapes) {
  EXPECT_TRUE(throws_with([] { dmcrop(zeros({4, 4, 3}, DType::f32), 2); }, {"dmcrop", "[4, 4, 3]", "f32"}));
  EXPECT_TRUE(throws_with([] { resize_image(zeros({4, 4, 1}, DType::u8), 2, 2, ResizeFilter::box); },
                          {"resize_image", "[4, 4, 1]"}));
  EXPECT_TRUE(throws_with([] { center_crop(zeros({4, 4, 3}, DType::u8), 5, 2); }, {"center_crop", "5x2"}));
  EXPECT_TRUE(throws_with([] { resize_image(zeros({4, 4, 3}, DType::u8), 0, 2, ResizeFilter::box); }, {"0x2"}));
  EXPECT_TRUE(throws_with([] { crop_method_from_name("squash"); }, {"squash", "dmcrop or resize"}));
}

}  // namespace
}  // namespace dcae::datasets
