#include "ops/spatial.h"

#include <algorithm>

#include "core/autograd/record.h"
#include "ops/cpu/spatial.h"
#include "ops/dispatch.h"

namespace dcae::ops {

using autograd::Node;

namespace {

void check_nhwc(const Tensor& x, const char* op) {
  DCAE_CHECK(x.defined(), op, ": undefined input");
  DCAE_CHECK(x.dim() == 4, op, " expects an NHWC tensor [N, H, W, C], got ", x.str());
}

void check_factor(int64_t factor, const char* op) {
  DCAE_CHECK(factor >= 1, op, ": factor must be >= 1, got ", factor);
}

void check_channels(const Tensor& x, int64_t out_channels, const char* op) {
  DCAE_CHECK(x.defined(), op, ": undefined input");
  DCAE_CHECK(x.dim() >= 1, op, " needs the channels in the last dim, got a scalar ", x.str());
  DCAE_CHECK(is_floating(x.dtype()), op, " needs a floating tensor, got ", x.str());
  DCAE_CHECK(out_channels >= 1, op, ": out_channels must be >= 1, got ", out_channels, " for ", x.str());
}

// Records a one-input op whose gradient is back(grad).
template <typename Back>
Tensor record_unary(const char* name, const Tensor& x, Tensor out, Back back) {
  if (!autograd::needs_history({x})) return out;
  autograd::record(name, {x}, {out}, [back](const std::vector<Tensor>& grads, const Node&) {
    return std::vector<Tensor>{back(grads[0])};
  });
  return out;
}

}  // namespace

Tensor pixel_unshuffle(const Tensor& x, int64_t factor) {
  check_nhwc(x, "pixel_unshuffle");
  check_factor(factor, "pixel_unshuffle");
  DCAE_CHECK(x.size(1) % factor == 0 && x.size(2) % factor == 0, "pixel_unshuffle: H and W of ", x.str(),
             " must be divisible by the factor ", factor);
  if (factor == 1) return x;
  Tensor out = DCAE_KERNEL(x.device(), pixel_unshuffle_forward, x, factor);
  return record_unary("pixel_unshuffle", x, out, [factor](const Tensor& g) { return pixel_shuffle(g, factor); });
}

Tensor pixel_shuffle(const Tensor& x, int64_t factor) {
  check_nhwc(x, "pixel_shuffle");
  check_factor(factor, "pixel_shuffle");
  DCAE_CHECK(x.size(3) % (factor * factor) == 0, "pixel_shuffle: channels of ", x.str(),
             " must be divisible by factor^2 = ", factor * factor);
  if (factor == 1) return x;
  Tensor out = DCAE_KERNEL(x.device(), pixel_shuffle_forward, x, factor);
  return record_unary("pixel_shuffle", x, out, [factor](const Tensor& g) { return pixel_unshuffle(g, factor); });
}

Tensor channel_average(const Tensor& x, int64_t out_channels) {
  check_channels(x, out_channels, "channel_average");
  const int64_t channels = x.shape().back();
  DCAE_CHECK(channels % out_channels == 0, "channel_average: ", channels, " channels of ", x.str(),
             " do not split into ", out_channels, " equal groups");
  const int64_t group = channels / out_channels;
  if (group == 1) return x;
  const double inv_group = 1.0 / static_cast<double>(group);
  Tensor out = DCAE_KERNEL(x.device(), channel_group_sum_forward, x, out_channels, inv_group);
  // Each input channel contributed 1/g to its group's mean.
  return record_unary("channel_average", x, out, [channels, inv_group](const Tensor& g) {
    return DCAE_KERNEL(g.device(), channel_repeat_forward, g, channels, inv_group);
  });
}

Tensor channel_repeat_interleave(const Tensor& x, int64_t out_channels) {
  check_channels(x, out_channels, "channel_repeat_interleave");
  const int64_t channels = x.shape().back();
  DCAE_CHECK(channels >= 1 && out_channels % channels == 0, "channel_repeat_interleave: ", out_channels,
             " output channels are not a whole multiple of the ", channels, " channels of ", x.str());
  if (out_channels == channels) return x;
  Tensor out = DCAE_KERNEL(x.device(), channel_repeat_forward, x, out_channels, 1.0);
  // Each input channel fed `repeats` consecutive outputs: its gradient is their sum.
  return record_unary("channel_repeat_interleave", x, out, [channels](const Tensor& g) {
    return DCAE_KERNEL(g.device(), channel_group_sum_forward, g, channels, 1.0);
  });
}

Tensor downsample_shortcut(const Tensor& x, int64_t out_channels, int64_t factor) {
  check_nhwc(x, "downsample_shortcut");
  check_factor(factor, "downsample_shortcut");
  const int64_t unshuffled = x.size(3) * factor * factor;
  DCAE_CHECK(out_channels >= 1 && unshuffled % out_channels == 0, "downsample_shortcut: ", x.str(),
             " unshuffled by ", factor, " has ", unshuffled, " channels, which do not average into ", out_channels,
             " equal groups");
  return channel_average(pixel_unshuffle(x, factor), out_channels);
}

Tensor upsample_shortcut(const Tensor& x, int64_t out_channels, int64_t factor) {
  check_nhwc(x, "upsample_shortcut");
  check_factor(factor, "upsample_shortcut");
  const int64_t repeated = out_channels * factor * factor;
  DCAE_CHECK(out_channels >= 1 && x.size(3) >= 1 && repeated % x.size(3) == 0, "upsample_shortcut: ",
             out_channels, " output channels x factor^2 = ", repeated, " is not a whole multiple of the channels of ",
             x.str());
  return pixel_shuffle(channel_repeat_interleave(x, repeated), factor);
}

Tensor upsample_nearest(const Tensor& x, int64_t factor) {
  check_nhwc(x, "upsample_nearest");
  check_factor(factor, "upsample_nearest");
  if (factor == 1) return x;
  Tensor out = DCAE_KERNEL(x.device(), upsample_nearest_forward, x, factor);
  return record_unary("upsample_nearest", x, out, [factor](const Tensor& g) {
    return DCAE_KERNEL(g.device(), upsample_nearest_backward, g, factor);
  });
}

Tensor upsample_nearest2x(const Tensor& x) { return upsample_nearest(x, 2); }

Tensor pad(const Tensor& x, Padding2d padding, double value) {
  check_nhwc(x, "pad");
  const auto crop = [](int64_t amount) { return std::max<int64_t>(0, -amount); };
  DCAE_CHECK(crop(padding.top) + crop(padding.bottom) <= x.size(1) &&
                 crop(padding.left) + crop(padding.right) <= x.size(2),
             "pad: padding {top ", padding.top, ", bottom ", padding.bottom, ", left ", padding.left, ", right ",
             padding.right, "} crops more rows or columns than ", x.str(), " has");
  Tensor out = DCAE_KERNEL(x.device(), pad_forward, x, padding, value);
  // The gradient is the output gradient cropped back to the input window (zeros where the input was cropped).
  const Padding2d inverse{-padding.top, -padding.bottom, -padding.left, -padding.right};
  return record_unary("pad", x, out,
                      [inverse](const Tensor& g) { return DCAE_KERNEL(g.device(), pad_forward, g, inverse, 0.0); });
}

}  // namespace dcae::ops
