// PNG files for reconstruction grids and image datasets (8-bit RGB).
#pragma once
#include <string>

#include "core/tensor/tensor.h"

namespace dcae::datasets {

// Writes an image [H, W, 3] (u8, or float in [-1, 1] which is mapped as in the DC-AE eval protocol:
// clamp(round(255 * (x * 0.5 + 0.5)))) to `path` atomically (temp file, then rename).
void write_png(const std::string& path, const Tensor& image);
// Reads an 8-bit RGB or RGBA (alpha dropped) or grey PNG as u8 [H, W, 3].
Tensor read_png(const std::string& path);
// Tiles a batch NHWC [N, H, W, 3] into one image with `columns` columns and a 2-pixel border.
Tensor image_grid(const Tensor& batch, int64_t columns);

}  // namespace dcae::datasets
