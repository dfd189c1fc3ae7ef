// Spatial rearrangements of NHWC activations ([N, H, W, C], channels last) and the non-parametric DC-AE residual
// shortcuts built from them (spec dcae-model.md section 3). All are differentiable.
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::ops {

// Space-to-channel with PyTorch's channel order, in NHWC: [N, H, W, C] -> [N, H/r, W/r, C*r*r] with
//   out[n, h, w, c*r*r + i*r + j] = x[n, h*r + i, w*r + j, c]   (i: row offset, j: column offset).
// H and W must be divisible by r.
Tensor pixel_unshuffle(const Tensor& x, int64_t factor);
// Channel-to-space, the exact inverse of pixel_unshuffle: [N, H, W, C] -> [N, H*r, W*r, C/(r*r)].
Tensor pixel_shuffle(const Tensor& x, int64_t factor);

// Mean over groups of g = C / out_channels consecutive channels (last dim, any rank):
//   out[..., o] = mean(x[..., o*g : (o+1)*g]).
Tensor channel_average(const Tensor& x, int64_t out_channels);
// Each channel copied repeats = out_channels / C times consecutively (not tiled): out[..., m] = x[..., m / repeats].
Tensor channel_repeat_interleave(const Tensor& x, int64_t out_channels);

// PixelUnshuffleChannelAveragingDownSampleLayer: channel_average(pixel_unshuffle(x, factor), out_channels)
// (no unshuffle for factor 1). For C -> 2C, x2 this is a horizontal 1x2 average then a vertical space-to-channel.
Tensor downsample_shortcut(const Tensor& x, int64_t out_channels, int64_t factor);
// ChannelDuplicatingPixelUnshuffleUpSampleLayer: pixel_shuffle(channel_repeat_interleave(x, out_channels*r*r), r)
// (no shuffle for factor 1). For C -> C, x2 this is nearest-neighbour upsampling.
Tensor upsample_shortcut(const Tensor& x, int64_t out_channels, int64_t factor);

// Nearest-neighbour upsampling by an integer factor: out[n, h, w, c] = x[n, h / s, w / s, c].
Tensor upsample_nearest(const Tensor& x, int64_t factor);
Tensor upsample_nearest2x(const Tensor& x);

// Rows/columns added on each side of H and W; a negative amount crops that many from that side.
struct Padding2d {
  int64_t top = 0, bottom = 0, left = 0, right = 0;
};
// Constant padding of H and W of an NHWC tensor: [N, H, W, C] -> [N, H+top+bottom, W+left+right, C].
Tensor pad(const Tensor& x, Padding2d padding, double value = 0.0);

}  // namespace dcae::ops
