#include "trainer/image_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/autograd/grad_mode.h"
#include "ops/cpu/cpu_util.h"
#include "ops/elementwise.h"
#include "ops/unary.h"

namespace dcae::trainer {

namespace {

constexpr int64_t kWindow = 11;
constexpr double kSigma = 1.5;
constexpr double kRange = 255.0;

void check_pair(const Tensor& a, const Tensor& b, const char* metric) {
  DCAE_CHECK(a.defined() && b.defined() && a.dim() == 4 && a.shape() == b.shape() && a.dtype() == DType::u8 &&
                 b.dtype() == DType::u8,
             metric, " needs two u8 NHWC batches of one shape, got ", a.defined() ? a.str() : "undefined", " and ",
             b.defined() ? b.str() : "undefined");
}

// The normalised 1-D Gaussian of torchmetrics (_gaussian): taps at -5..5.
std::vector<double> gaussian_taps() {
  std::vector<double> taps(kWindow);
  double total = 0.0;
  for (int64_t i = 0; i < kWindow; ++i) {
    const double d = static_cast<double>(i - kWindow / 2);
    taps[i] = std::exp(-(d * d) / (2 * kSigma * kSigma));
    total += taps[i];
  }
  for (double& t : taps) t /= total;
  return taps;
}

// Valid-region separable Gaussian filter of a [h, w] plane -> [h - 10, w - 10].
std::vector<double> filter_valid(const std::vector<double>& plane, int64_t h, int64_t w, const std::vector<double>& g) {
  const int64_t ow = w - kWindow + 1, oh = h - kWindow + 1;
  std::vector<double> rows(static_cast<size_t>(h * ow)), out(static_cast<size_t>(oh * ow));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      double s = 0.0;
      for (int64_t k = 0; k < kWindow; ++k) s += g[k] * plane[y * w + x + k];
      rows[y * ow + x] = s;
    }
  for (int64_t y = 0; y < oh; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      double s = 0.0;
      for (int64_t k = 0; k < kWindow; ++k) s += g[k] * rows[(y + k) * ow + x];
      out[y * ow + x] = s;
    }
  return out;
}

}  // namespace

Tensor to_uint8_images(const Tensor& images) {
  DCAE_CHECK(images.defined() && images.dim() == 4 && is_floating(images.dtype()),
             "to_uint8_images needs float NHWC images in [-1, 1], got ", images.defined() ? images.str() : "undefined");
  autograd::NoGradGuard no_grad;
  const Tensor scaled = ops::clamp(ops::add(ops::mul(images.detach().to(DType::f32), 127.5), 127.5), 0.0, 255.0);
  const std::vector<float> values = scaled.to(Device::cpu()).contiguous().to_vector<float>();
  Tensor out = empty(images.shape(), DType::u8);
  uint8_t* dst = out.data<uint8_t>();
  // 255 * (x/2 + 0.5) = 127.5 x + 127.5, computed in f32 like the reference; nearbyint rounds half to even, as
  // torch.round does.
  for (size_t i = 0; i < values.size(); ++i) dst[i] = static_cast<uint8_t>(std::nearbyint(values[i]));
  return out;
}

std::vector<double> psnr_u8(const Tensor& a, const Tensor& b) {
  check_pair(a, b, "PSNR");
  const int64_t n = a.size(0), per_image = a.numel() / std::max<int64_t>(n, 1);
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  const uint8_t* pa = ca.data<const uint8_t>();
  const uint8_t* pb = cb.data<const uint8_t>();
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < per_image; ++j) {
      const double d = static_cast<double>(pa[i * per_image + j]) - static_cast<double>(pb[i * per_image + j]);
      sum += d * d;
    }
    const double mse = sum / static_cast<double>(per_image);
    out[i] = mse == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(kRange * kRange / mse);
  }
  return out;
}

std::vector<double> ssim_u8(const Tensor& a, const Tensor& b) {
  check_pair(a, b, "SSIM");
  const int64_t n = a.size(0), h = a.size(1), w = a.size(2), c = a.size(3);
  DCAE_CHECK(h >= kWindow && w >= kWindow, "SSIM needs images of at least ", kWindow, "x", kWindow, " (its window), got ",
             a.str());
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  const uint8_t* pa = ca.data<const uint8_t>();
  const uint8_t* pb = cb.data<const uint8_t>();
  const std::vector<double> g = gaussian_taps();
  const double c1 = (0.01 * kRange) * (0.01 * kRange), c2 = (0.03 * kRange) * (0.03 * kRange);
  // One (image, channel) plane per task; each task writes its own mean.
  std::vector<double> plane_means(static_cast<size_t>(n * c));
  ops::cpu::parallel_for(n * c, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> x(h * w), y(h * w), xx(h * w), yy(h * w), xy(h * w);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image = task / c, channel = task % c;
      for (int64_t p = 0; p < h * w; ++p) {
        const int64_t at = (image * h * w + p) * c + channel;
        x[p] = pa[at];
        y[p] = pb[at];
        xx[p] = x[p] * x[p];
        yy[p] = y[p] * y[p];
        xy[p] = x[p] * y[p];
      }
      const auto mx = filter_valid(x, h, w, g), my = filter_valid(y, h, w, g), sxx = filter_valid(xx, h, w, g),
                 syy = filter_valid(yy, h, w, g), sxy = filter_valid(xy, h, w, g);
      double total = 0.0;
      for (size_t p = 0; p < mx.size(); ++p) {
        const double var_x = sxx[p] - mx[p] * mx[p], var_y = syy[p] - my[p] * my[p], cov = sxy[p] - mx[p] * my[p];
        total += ((2 * mx[p] * my[p] + c1) * (2 * cov + c2)) /
                 ((mx[p] * mx[p] + my[p] * my[p] + c1) * (var_x + var_y + c2));
      }
      plane_means[task] = total / static_cast<double>(mx.size());
    }
  });
  std::vector<double> out(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t ch = 0; ch < c; ++ch) out[i] += plane_means[i * c + ch];
    out[i] /= static_cast<double>(c);
  }
  return out;
}

double mean_of(const std::vector<double>& values) {
  if (values.empty()) return 0.0;
  double total = 0.0;
  for (double v : values) total += v;
  return total / static_cast<double>(values.size());
}

}  // namespace dcae::trainer
