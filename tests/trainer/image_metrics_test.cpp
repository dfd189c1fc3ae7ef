// PSNR / SSIM on uint8 images against plain reference loops (a direct 11x11 Gaussian window sum per position),
// known closed forms, and the error cases.
#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing/check.h"
#include "trainer/image_metrics.h"

namespace dcae::trainer {
namespace {

Tensor random_u8(const Shape& shape, uint64_t seed) {
  const std::vector<double> v = testing::random_uniform(shape, seed, 0.0, 256.0).to_vector<double>();
  std::vector<uint8_t> bytes;
  for (double x : v) bytes.push_back(static_cast<uint8_t>(std::min(255.0, std::floor(x))));
  return from_vector(bytes, shape);
}

// `a` plus bounded noise, so SSIM lands well inside (0, 1).
Tensor noisy_copy(const Tensor& a, uint64_t seed, double amplitude) {
  const std::vector<uint8_t> base = a.to_vector<uint8_t>();
  const std::vector<double> noise = testing::random_tensor(a.shape(), seed).to_vector<double>();
  std::vector<uint8_t> out(base.size());
  for (size_t i = 0; i < base.size(); ++i)
    out[i] = static_cast<uint8_t>(std::clamp(std::round(base[i] + amplitude * noise[i]), 0.0, 255.0));
  return from_vector(out, a.shape());
}

double reference_psnr(const Tensor& a, const Tensor& b, int64_t image) {
  const int64_t per = a.numel() / a.size(0);
  const auto va = a.to_vector<uint8_t>(), vb = b.to_vector<uint8_t>();
  double sum = 0.0;
  for (int64_t j = 0; j < per; ++j) sum += std::pow(double(va[image * per + j]) - double(vb[image * per + j]), 2);
  return 10.0 * std::log10(255.0 * 255.0 / (sum / per));
}

// SSIM straight from the definition: at every position whose 11x11 window fits, Gaussian-weighted means,
// variances and covariance by a direct 2-D sum; mean over positions and channels.
double reference_ssim(const Tensor& a, const Tensor& b, int64_t image) {
  const int64_t h = a.size(1), w = a.size(2), c = a.size(3);
  const auto va = a.to_vector<uint8_t>(), vb = b.to_vector<uint8_t>();
  double g[11], total = 0.0;
  for (int i = 0; i < 11; ++i) total += g[i] = std::exp(-((i - 5.0) * (i - 5.0)) / (2 * 1.5 * 1.5));
  for (double& x : g) x /= total;
  const double c1 = std::pow(0.01 * 255, 2), c2 = std::pow(0.03 * 255, 2);
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t y = 0; y + 11 <= h; ++y)
      for (int64_t x = 0; x + 11 <= w; ++x) {
        double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
        for (int dy = 0; dy < 11; ++dy)
          for (int dx = 0; dx < 11; ++dx) {
            const int64_t at = ((image * h + y + dy) * w + x + dx) * c + ch;
            const double weight = g[dy] * g[dx], p = va[at], q = vb[at];
            mx += weight * p, my += weight * q, sxx += weight * p * p, syy += weight * q * q, sxy += weight * p * q;
          }
        const double vx = sxx - mx * mx, vy = syy - my * my, cov = sxy - mx * my;
        sum += ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
        ++count;
      }
  return sum / count;
}

TEST(ImageMetrics, PsnrMatchesTheReferenceAndIsInfiniteForIdenticalImages) {
  const Tensor a = random_u8({3, 9, 7, 3}, 1), b = noisy_copy(a, 2, 12.0);
  const std::vector<double> psnr = psnr_u8(a, b);
  ASSERT_EQ(psnr.size(), 3u);
  for (int64_t i = 0; i < 3; ++i) EXPECT_NEAR(psnr[i], reference_psnr(a, b, i), 1e-12);
  EXPECT_GT(psnr[0], 20.0);  // noise of sigma 12 on 255: about 26.5 dB
  EXPECT_LT(psnr[0], 32.0);
  EXPECT_TRUE(std::isinf(psnr_u8(a, a)[1]));
  // A constant difference of 5 levels: 10 log10(255^2 / 25).
  std::vector<uint8_t> base(2 * 4 * 4 * 3, 100), shifted(2 * 4 * 4 * 3, 105);
  EXPECT_NEAR(psnr_u8(from_vector(base, {2, 4, 4, 3}), from_vector(shifted, {2, 4, 4, 3}))[1],
              10 * std::log10(255.0 * 255.0 / 25.0), 1e-12);
}

TEST(ImageMetrics, SsimMatchesTheDirectWindowSumOnOddSizes) {
  const Tensor a = random_u8({2, 13, 17, 3}, 3), b = noisy_copy(a, 4, 20.0);
  const std::vector<double> ssim = ssim_u8(a, b);
  ASSERT_EQ(ssim.size(), 2u);
  for (int64_t i = 0; i < 2; ++i) {
    EXPECT_NEAR(ssim[i], reference_ssim(a, b, i), 1e-10);
    EXPECT_GT(ssim[i], 0.3);
    EXPECT_LT(ssim[i], 0.999);
  }
  // Unrelated images score far lower than a noisy copy; identical ones exactly 1.
  const Tensor other = random_u8({2, 13, 17, 3}, 5);
  EXPECT_LT(ssim_u8(a, other)[0], 0.2);
  EXPECT_NEAR(ssim_u8(a, a)[0], 1.0, 1e-12);
  // Non-contiguous inputs (a channel-reversed view would change values; use a strided batch slice instead).
  const Tensor a4 = random_u8({4, 12, 12, 3}, 6), b4 = noisy_copy(a4, 7, 10.0);
  const std::vector<double> every_other = ssim_u8(a4.slice(0, 0, 4, 2), b4.slice(0, 0, 4, 2));
  EXPECT_NEAR(every_other[1], ssim_u8(a4, b4)[2], 1e-12);
}

TEST(ImageMetrics, SsimOfConstantImagesHasItsClosedForm) {
  // Flat images: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
  std::vector<uint8_t> x(12 * 12 * 1, 80), y(12 * 12 * 1, 120);
  const double c1 = std::pow(0.01 * 255, 2);
  const double expected = (2.0 * 80 * 120 + c1) / (80.0 * 80 + 120.0 * 120 + c1);
  EXPECT_NEAR(ssim_u8(from_vector(x, {1, 12, 12, 1}), from_vector(y, {1, 12, 12, 1}))[0], expected, 1e-9);
}

TEST(ImageMetrics, Uint8ConversionFollowsTheProtocol) {
  const Tensor images = testing::random_uniform({2, 5, 3, 3}, 8, -1.3, 1.3, DType::f32);
  const std::vector<float> v = images.to_vector<float>();
  const std::vector<uint8_t> u = to_uint8_images(images).to_vector<uint8_t>();
  for (size_t i = 0; i < v.size(); ++i) {
    const double expected = std::clamp(std::nearbyint(127.5f * v[i] + 127.5f), 0.0f, 255.0f);
    EXPECT_EQ(u[i], static_cast<uint8_t>(expected)) << v[i];
  }
  EXPECT_EQ(to_uint8_images(full({1, 2, 2, 3}, -1.0)).to_vector<uint8_t>()[0], 0);
  EXPECT_EQ(to_uint8_images(full({1, 2, 2, 3}, 1.0)).to_vector<uint8_t>()[0], 255);
  // bf16 input converts through f32.
  EXPECT_EQ(to_uint8_images(images.to(DType::bf16)).shape(), images.shape());
}

TEST(ImageMetrics, ErrorsNameTheShapes) {
  const Tensor a = random_u8({1, 12, 12, 3}, 9);
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  std::string m = message([&] { psnr_u8(a, random_u8({1, 12, 11, 3}, 10)); });
  EXPECT_NE(m.find("[1, 12, 11, 3]"), std::string::npos) << m;
  m = message([&] { ssim_u8(random_u8({1, 10, 12, 3}, 11), random_u8({1, 10, 12, 3}, 12)); });
  EXPECT_NE(m.find("at least 11x11"), std::string::npos) << m;
  m = message([&] { ssim_u8(a.to(DType::f32), a.to(DType::f32)); });
  EXPECT_NE(m.find("u8"), std::string::npos) << m;
  m = message([&] { to_uint8_images(a); });
  EXPECT_NE(m.find("float NHWC"), std::string::npos) << m;
}

}  // namespace
}  // namespace dcae::trainer
