// DC-AE's pixel-(un)shuffle resampling blocks with their non-parametric residual shortcut, in one pass: the
// unfused form moves the activation three times (shuffle, shortcut, add), this reads y and x once and writes once.
// Results equal the unfused ops bit for bit (same roundings). ops/fused.h picks them when no gradient is needed.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

// pixel_shuffle(y, factor) + upsample_shortcut(x, out_channels, factor); y [N, H, W, Co*f*f], x [N, H, W, Cx].
Tensor pixel_shuffle_add_shortcut(const Tensor& y, const Tensor& x, int64_t out_channels, int64_t factor);
// pixel_unshuffle(y, factor) + downsample_shortcut(x, out_channels, factor); y [N, H, W, Co/(f*f)], x [N, H, W, Cx].
Tensor pixel_unshuffle_add_shortcut(const Tensor& y, const Tensor& x, int64_t out_channels, int64_t factor);

}  // namespace dcae::ops::cuda
