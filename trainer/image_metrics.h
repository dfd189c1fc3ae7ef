// Reconstruction quality the way the DC-AE evaluation protocol measures it (spec/dcae-model.md section 12): images
// are first quantised to uint8, then PSNR (data range 255) and SSIM (11x11 Gaussian window, sigma 1.5, K1 0.01,
// K2 0.03, data range 255, as torchmetrics computes it: the mean over every window that lies inside the image and
// over the channels) are taken per image and averaged over images. Tools reuse these for their reports.
#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::trainer {

// NHWC float images in [-1, 1] (any float dtype, any device) -> u8 on the CPU by clamp(round(255 * (x/2 + 0.5))),
// the DC-AE protocol's conversion (datasets::write_png uses the same).
Tensor to_uint8_images(const Tensor& images);

// Per-image PSNR in dB of two u8 batches [N, H, W, C] of one shape: 10 log10(255^2 / MSE). Identical images give
// +infinity.
std::vector<double> psnr_u8(const Tensor& a, const Tensor& b);
// Per-image SSIM of two u8 batches [N, H, W, C] of one shape; H and W must be at least 11.
std::vector<double> ssim_u8(const Tensor& a, const Tensor& b);

double mean_of(const std::vector<double>& values);

}  // namespace dcae::trainer
