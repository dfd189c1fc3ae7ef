#include "datasets/image_resize.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dcae::datasets {

namespace {

constexpr int kWeightBits = 22;  // fixed-point weights: 8 bits of pixel + 2 bits of headroom in an int32 sum

double box_kernel(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

// Keys' cubic convolution with a = -0.5.
double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// For each output position: the first input index, how many inputs it reads, and their fixed-point weights.
struct ResampleWeights {
  int64_t taps = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;  // out_size * taps
};

ResampleWeights compute_weights(int64_t in_size, int64_t out_size, ResizeFilter filter) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);  // widen the kernel when shrinking so it averages
  const double support = (filter == ResizeFilter::box ? 0.5 : 2.0) * filter_scale;
  ResampleWeights w;
  w.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  w.first.resize(out_size);
  w.count.resize(out_size);
  w.weights.assign(static_cast<size_t>(out_size * w.taps), 0);
  std::vector<double> real(static_cast<size_t>(w.taps));
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = (static_cast<double>(o) + 0.5) * scale;
    // Truncating casts (not floor) are part of the reference behaviour.
    const int64_t first = std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    const int64_t end = std::min<int64_t>(in_size, static_cast<int64_t>(center + support + 0.5));
    const int64_t count = std::min<int64_t>(end - first, w.taps);
    double total = 0.0;
    for (int64_t k = 0; k < count; ++k) {
      const double x = (static_cast<double>(first + k) - center + 0.5) / filter_scale;
      real[k] = filter == ResizeFilter::box ? box_kernel(x) : bicubic_kernel(x);
      total += real[k];
    }
    for (int64_t k = 0; k < count; ++k) {
      const double v = (total != 0.0 ? real[k] / total : real[k]) * static_cast<double>(1 << kWeightBits);
      w.weights[o * w.taps + k] = static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);
    }
    w.first[o] = first;
    w.count[o] = count;
  }
  return w;
}

inline uint8_t clip_fixed(int32_t sum) {
  if (sum <= 0) return 0;
  if (sum >= (255 << kWeightBits)) return 255;  // also catches the positive overflow margin
  return static_cast<uint8_t>(sum >> kWeightBits);
}

// Resamples along the width: [H, W_in, 3] -> [H, W_out, 3].
void resample_rows(const uint8_t* in, int64_t height, int64_t in_width, uint8_t* out, int64_t out_width,
                   const ResampleWeights& w) {
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = in + y * in_width * 3;
    uint8_t* out_row = out + y * out_width * 3;
    for (int64_t x = 0; x < out_width; ++x) {
      const int32_t* k = &w.weights[x * w.taps];
      const uint8_t* src = row + w.first[x] * 3;
      int32_t r = 1 << (kWeightBits - 1), g = r, b = r;  // start at one half so the shift rounds
      for (int64_t t = 0; t < w.count[x]; ++t) {
        r += src[t * 3 + 0] * k[t];
        g += src[t * 3 + 1] * k[t];
        b += src[t * 3 + 2] * k[t];
      }
      out_row[x * 3 + 0] = clip_fixed(r);
      out_row[x * 3 + 1] = clip_fixed(g);
      out_row[x * 3 + 2] = clip_fixed(b);
    }
  }
}

// Resamples along the height: [H_in, W, 3] -> [H_out, W, 3].
void resample_columns(const uint8_t* in, int64_t width, uint8_t* out, int64_t out_height, const ResampleWeights& w) {
  const int64_t row_elems = width * 3;
  std::vector<int32_t> sums(static_cast<size_t>(row_elems));
  for (int64_t y = 0; y < out_height; ++y) {
    std::fill(sums.begin(), sums.end(), 1 << (kWeightBits - 1));
    const int32_t* k = &w.weights[y * w.taps];
    for (int64_t t = 0; t < w.count[y]; ++t) {
      const uint8_t* src = in + (w.first[y] + t) * row_elems;
      const int32_t weight = k[t];
      for (int64_t i = 0; i < row_elems; ++i) sums[i] += src[i] * weight;
    }
    uint8_t* dst = out + y * row_elems;
    for (int64_t i = 0; i < row_elems; ++i) dst[i] = clip_fixed(sums[i]);
  }
}

void check_rgb(const Tensor& image, const char* op) {
  DCAE_CHECK(image.defined() && image.dim() == 3 && image.size(2) == 3 && image.dtype() == DType::u8, op,
             ": expected a u8 image [H, W, 3], got ", image.defined() ? image.str() : std::string("undefined"));
  DCAE_CHECK(image.size(0) > 0 && image.size(1) > 0, op, ": empty image ", image.str());
}

}  // namespace

Tensor resize_image(const Tensor& image, int64_t height, int64_t width, ResizeFilter filter) {
  check_rgb(image, "resize_image");
  DCAE_CHECK(height > 0 && width > 0, "resize_image: target size must be positive, got ", height, "x", width,
             " for ", image.str());
  const Tensor in = image.contiguous();
  const int64_t in_h = in.size(0), in_w = in.size(1);
  Tensor current = in;
  if (width != in_w) {
    Tensor next = empty({in_h, width, 3}, DType::u8);
    resample_rows(current.data<uint8_t>(), in_h, in_w, next.data<uint8_t>(), width,
                  compute_weights(in_w, width, filter));
    current = next;
  }
  if (height != in_h) {
    Tensor next = empty({height, width, 3}, DType::u8);
    resample_columns(current.data<uint8_t>(), width, next.data<uint8_t>(), height,
                     compute_weights(in_h, height, filter));
    current = next;
  }
  return current.is_same(in) && in.is_same(image) ? image.clone() : current;
}

Tensor center_crop(const Tensor& image, int64_t height, int64_t width) {
  check_rgb(image, "center_crop");
  DCAE_CHECK(height > 0 && width > 0 && height <= image.size(0) && width <= image.size(1), "center_crop: cannot cut ",
             height, "x", width, " out of ", image.str());
  const int64_t top = (image.size(0) - height) / 2, left = (image.size(1) - width) / 2;
  return image.narrow(0, top, height).narrow(1, left, width).contiguous();
}

Tensor resize_short_side(const Tensor& image, int64_t size) {
  check_rgb(image, "resize_short_side");
  DCAE_CHECK(size > 0, "resize_short_side: size must be positive, got ", size);
  Tensor current = image.contiguous();
  while (std::min(current.size(0), current.size(1)) >= 2 * size)
    current = resize_image(current, current.size(0) / 2, current.size(1) / 2, ResizeFilter::box);
  const double scale = static_cast<double>(size) / static_cast<double>(std::min(current.size(0), current.size(1)));
  // Round half to even, as Python's round() does in the reference.
  const auto scaled = [&](int64_t n) { return static_cast<int64_t>(std::nearbyint(static_cast<double>(n) * scale)); };
  return resize_image(current, scaled(current.size(0)), scaled(current.size(1)), ResizeFilter::bicubic);
}

Tensor dmcrop(const Tensor& image, int64_t size) {
  check_rgb(image, "dmcrop");
  DCAE_CHECK(size > 0, "dmcrop: size must be positive, got ", size);
  if (image.size(0) == size && image.size(1) == size) return image.contiguous();
  return center_crop(resize_short_side(image, size), size, size);
}

const char* crop_method_name(CropMethod method) { return method == CropMethod::dmcrop ? "dmcrop" : "resize"; }

CropMethod crop_method_from_name(const std::string& name) {
  if (name == "dmcrop") return CropMethod::dmcrop;
  if (name == "resize") return CropMethod::resize;
  DCAE_FAIL("unknown crop method '", name, "' (expected dmcrop or resize)");
}

Tensor prepare_image(const Tensor& image, int64_t size, CropMethod method) {
  if (method == CropMethod::dmcrop) return dmcrop(image, size);
  if (image.size(0) == size && image.size(1) == size) return image.contiguous();
  return resize_image(image, size, size, ResizeFilter::bicubic);
}

}  // namespace dcae::datasets
