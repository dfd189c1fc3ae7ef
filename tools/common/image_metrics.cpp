#include "tools/common/image_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace dcae::tools {

namespace {

constexpr int64_t kWindow = 11;
constexpr double kSigma = 1.5, kRange = 255.0;

void check_pair(const char* metric, const Tensor& a, const Tensor& b) {
  DCAE_CHECK(a.dtype() == DType::u8 && b.dtype() == DType::u8 && a.dim() == 3 && a.shape() == b.shape(), metric,
             " needs two u8 images [H, W, C] of the same shape, got ", a.str(), " and ", b.str());
}

std::vector<double> gaussian_window() {
  std::vector<double> w(kWindow);
  double total = 0;
  for (int64_t i = 0; i < kWindow; ++i) {
    const double d = static_cast<double>(i) - (kWindow - 1) / 2.0;
    total += w[i] = std::exp(-(d / kSigma) * (d / kSigma) / 2);
  }
  for (double& v : w) v /= total;
  return w;
}

// Gaussian-weighted means over every full 11x11 window of one plane [h][w] (separable: rows, then columns).
std::vector<double> window_means(const std::vector<double>& plane, int64_t h, int64_t w, const std::vector<double>& g) {
  const int64_t oh = h - kWindow + 1, ow = w - kWindow + 1;
  std::vector<double> rows(h * ow), out(oh * ow);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      double s = 0;
      for (int64_t k = 0; k < kWindow; ++k) s += g[k] * plane[y * w + x + k];
      rows[y * ow + x] = s;
    }
  for (int64_t y = 0; y < oh; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      double s = 0;
      for (int64_t k = 0; k < kWindow; ++k) s += g[k] * rows[(y + k) * ow + x];
      out[y * ow + x] = s;
    }
  return out;
}

}  // namespace

Tensor to_u8(const Tensor& image) {
  const auto v = image.to_vector<float>();
  std::vector<uint8_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const float x = std::floor(255.0f * (v[i] * 0.5f + 0.5f) + 0.5f);
    out[i] = static_cast<uint8_t>(std::isnan(x) ? 0.0f : std::fmin(255.0f, std::fmax(0.0f, x)));
  }
  return from_vector(out, image.shape());
}

double psnr_u8(const Tensor& a, const Tensor& b) {
  check_pair("PSNR", a, b);
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double squared = 0;
  for (size_t i = 0; i < x.size(); ++i) squared += (x[i] - y[i]) * (x[i] - y[i]);
  const double mse = squared / static_cast<double>(std::max<size_t>(x.size(), 1));
  if (mse == 0) return std::numeric_limits<double>::infinity();
  return 10 * std::log10(kRange * kRange / mse);
}

double ssim_u8(const Tensor& a, const Tensor& b) {
  check_pair("SSIM", a, b);
  const int64_t h = a.size(0), w = a.size(1), channels = a.size(2);
  DCAE_CHECK(h >= kWindow && w >= kWindow, "SSIM needs images of at least ", kWindow, "x", kWindow, ", got ", a.str());
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  const auto g = gaussian_window();
  const double c1 = (0.01 * kRange) * (0.01 * kRange), c2 = (0.03 * kRange) * (0.03 * kRange);
  double total = 0;
  int64_t count = 0;
  std::vector<double> px(h * w), py(h * w), pxx(h * w), pyy(h * w), pxy(h * w);
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t i = 0; i < h * w; ++i) {
      px[i] = x[i * channels + c];
      py[i] = y[i * channels + c];
      pxx[i] = px[i] * px[i];
      pyy[i] = py[i] * py[i];
      pxy[i] = px[i] * py[i];
    }
    const auto mx = window_means(px, h, w, g), my = window_means(py, h, w, g);
    const auto exx = window_means(pxx, h, w, g), eyy = window_means(pyy, h, w, g), exy = window_means(pxy, h, w, g);
    for (size_t i = 0; i < mx.size(); ++i) {
      // Variances clamped at 0 like torchmetrics (rounding can make E[x^2] - E[x]^2 slightly negative).
      const double vx = std::max(0.0, exx[i] - mx[i] * mx[i]), vy = std::max(0.0, eyy[i] - my[i] * my[i]);
      const double cov = exy[i] - mx[i] * my[i];
      total += ((2 * mx[i] * my[i] + c1) * (2 * cov + c2)) / ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2));
      ++count;
    }
  }
  return total / static_cast<double>(count);
}

}  // namespace dcae::tools
