// CPU kernels for ops/spatial.h. Arguments are already checked by the op. Pure data movement (shuffles, nearest
// upsampling, padding) copies elements of any dtype exactly; kernels that add or scale compute bf16/f16 in f32.
#pragma once
#include "ops/spatial.h"

namespace dcae::ops::cpu {

// [N, H, W, C] -> [N, H/r, W/r, C*r*r]; also the backward of pixel_shuffle.
Tensor pixel_unshuffle_forward(const Tensor& x, int64_t factor);
// [N, H, W, C] -> [N, H*r, W*r, C/(r*r)]; also the backward of pixel_unshuffle.
Tensor pixel_shuffle_forward(const Tensor& x, int64_t factor);

// out[..., o] = scale * sum of x[..., o*g : (o+1)*g], g = C / out_channels. channel_average with scale 1/g, and the
// backward of channel_repeat_interleave with scale 1.
Tensor channel_group_sum_forward(const Tensor& x, int64_t out_channels, double scale);
// out[..., m] = scale * x[..., m / repeats], repeats = out_channels / C. channel_repeat_interleave with scale 1, and
// the backward of channel_average with scale 1/g.
Tensor channel_repeat_forward(const Tensor& x, int64_t out_channels, double scale);

// [N, H, W, C] -> [N, H*s, W*s, C], each pixel copied into an s x s block.
Tensor upsample_nearest_forward(const Tensor& x, int64_t factor);
// Its backward: sums each s x s block of grad [N, H*s, W*s, C] into [N, H, W, C].
Tensor upsample_nearest_backward(const Tensor& grad, int64_t factor);

// Constant padding / cropping of H and W; pad with the negated amounts and value 0 is its own backward.
Tensor pad_forward(const Tensor& x, const Padding2d& padding, double value);

}  // namespace dcae::ops::cpu
