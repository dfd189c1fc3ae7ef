// Resampling of u8 RGB images [H, W, 3] and the DC-AE / ADM "DMCrop" centre crop (spec/dcae-model.md section 10).
//
// The resampler follows Image.resize of Pillow up to 12 (separable, horizontal pass then vertical, filter support
// widened by the scale when shrinking so it antialiases, 22-bit fixed-point weights, u8 rounding after each pass),
// so DMCrop matches the reference preprocessing of the official evaluation code bit for bit (Pillow 13 may run the
// vertical pass first, which moves a few pixels by one or two levels).
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor/tensor.h"

namespace dcae::datasets {

enum class ResizeFilter { box, bicubic };

// Resizes to [height, width, 3]; a dimension whose size does not change is not resampled.
Tensor resize_image(const Tensor& image, int64_t height, int64_t width, ResizeFilter filter);

// Crops the centre [height, width] (offsets rounded down, as (H - h) // 2).
Tensor center_crop(const Tensor& image, int64_t height, int64_t width);

// The scaling part of DMCrop: halve with a box filter while the short side is >= 2 * size, then bicubic so the
// short side equals `size` (long side round-half-even(long * size / short)). Keeps the aspect ratio.
Tensor resize_short_side(const Tensor& image, int64_t size);

// DMCrop: resize_short_side then centre crop to [size, size, 3]. An image already [size, size] is returned as is.
Tensor dmcrop(const Tensor& image, int64_t size);

// How dcae-shard brings an image to the stored resolution.
enum class CropMethod {
  dmcrop,  // keep the aspect ratio, crop the centre
  resize,  // bicubic straight to [size, size] (the aspect ratio changes, nothing is cut off)
};
const char* crop_method_name(CropMethod method);
CropMethod crop_method_from_name(const std::string& name);  // "dmcrop" or "resize"
Tensor prepare_image(const Tensor& image, int64_t size, CropMethod method);

}  // namespace dcae::datasets
