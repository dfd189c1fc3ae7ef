// Reconstruction metrics of the DC-AE evaluation protocol (spec dcae-model.md §12), on 8-bit images: PSNR with
// peak 255 and SSIM as torchmetrics computes it (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range
// 255, averaged over channels and the window positions that lie fully inside the image).
// (Lives with the tools until the trainer grows trainer/metrics.)
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::tools {

// A float image in [-1, 1] (any shape) to u8 exactly as write_png stores it: clamp(round(255 * (x / 2 + 0.5))).
Tensor to_u8(const Tensor& image);

// Both images u8 [H, W, C] of the same shape. +infinity for identical images.
double psnr_u8(const Tensor& a, const Tensor& b);
// Both images u8 [H, W, C] of the same shape, at least 11x11.
double ssim_u8(const Tensor& a, const Tensor& b);

}  // namespace dcae::tools
