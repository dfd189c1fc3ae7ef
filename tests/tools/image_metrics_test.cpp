// PSNR / SSIM of the evaluation protocol against hand-computed values and a brute-force 2-D window reference.
#include "tools/common/image_metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing/check.h"

namespace dcae::tools {
namespace {

Tensor random_u8(const Shape& shape, uint64_t seed) {
  return testing::random_uniform(shape, seed, 0, 255.999, DType::f64).to(DType::u8);
}

// SSIM straight from the definition: every full 11x11 window, 2-D Gaussian weights, per channel, then the mean.
double reference_ssim(const Tensor& a, const Tensor& b) {
  const int64_t h = a.size(0), w = a.size(1), ch = a.size(2);
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double weights[11][11], total = 0;
  for (int i = 0; i < 11; ++i)
    for (int j = 0; j < 11; ++j) total += weights[i][j] = std::exp(-((i - 5) * (i - 5) + (j - 5) * (j - 5)) / 4.5);
  const double c1 = 2.55 * 2.55, c2 = 7.65 * 7.65;
  double sum = 0;
  int64_t n = 0;
  for (int64_t c = 0; c < ch; ++c)
    for (int64_t top = 0; top + 11 <= h; ++top)
      for (int64_t left = 0; left + 11 <= w; ++left) {
        double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
        for (int i = 0; i < 11; ++i)
          for (int j = 0; j < 11; ++j) {
            const double g = weights[i][j] / total;
            const double p = x[((top + i) * w + left + j) * ch + c], q = y[((top + i) * w + left + j) * ch + c];
            mx += g * p, my += g * q, xx += g * p * p, yy += g * q * q, xy += g * p * q;
          }
        const double vx = std::max(0.0, xx - mx * mx), vy = std::max(0.0, yy - my * my), cov = xy - mx * my;
        sum += (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
        ++n;
      }
  return sum / n;
}

TEST(ImageMetrics, PsnrOnUint8) {
  const Tensor a = random_u8({13, 17, 3}, 1);
  EXPECT_TRUE(std::isinf(psnr_u8(a, a)));
  auto values = a.to_vector<int64_t>();
  for (auto& v : values) v = v < 255 ? v + 1 : v - 1;  // off by one everywhere: MSE 1
  std::vector<uint8_t> shifted(values.begin(), values.end());
  EXPECT_NEAR(psnr_u8(a, from_vector(shifted, a.shape())), 20 * std::log10(255.0), 1e-12);
  EXPECT_THROW(psnr_u8(a, random_u8({13, 16, 3}, 2)), Error);
  EXPECT_THROW(psnr_u8(a, a.to(DType::f32)), Error);
}

TEST(ImageMetrics, SsimMatchesTheWindowDefinition) {
  const Tensor a = random_u8({20, 23, 3}, 3);
  // A correlated second image: a plus noise, clipped.
  const Tensor noise = testing::random_tensor({20, 23, 3}, 4, DType::f64, 20.0);
  const auto av = a.to_vector<double>(), nv = noise.to_vector<double>();
  std::vector<uint8_t> bv(av.size());
  for (size_t i = 0; i < av.size(); ++i) bv[i] = static_cast<uint8_t>(std::clamp(std::round(av[i] + nv[i]), 0.0, 255.0));
  const Tensor b = from_vector(bv, a.shape());
  const double ssim = ssim_u8(a, b);
  EXPECT_NEAR(ssim, reference_ssim(a, b), 1e-12);
  EXPECT_GT(ssim, 0.2);
  EXPECT_LT(ssim, 0.99);
  EXPECT_NEAR(ssim_u8(a, a), 1.0, 1e-12);
  // Two flat images: only the luminance term remains.
  const Tensor flat_a = full({11, 11, 1}, 100, DType::u8), flat_b = full({11, 11, 1}, 110, DType::u8);
  EXPECT_NEAR(ssim_u8(flat_a, flat_b), (22000 + 6.5025) / (22100 + 6.5025), 1e-12);
  EXPECT_THROW(ssim_u8(random_u8({10, 30, 3}, 5), random_u8({10, 30, 3}, 6)), Error);  // smaller than the window
}

TEST(ImageMetrics, FloatImagesMapToUint8LikeThePngWriter) {
  const Tensor x = from_vector<float>({-1.0f, 1.0f, 0.0f, 2.0f, -3.0f, std::nanf(""), 0.5f}, {7});
  EXPECT_EQ(to_u8(x).to_vector<int64_t>(), (std::vector<int64_t>{0, 255, 128, 255, 0, 0, 191}));
}

}  // namespace
}  // namespace dcae::tools
