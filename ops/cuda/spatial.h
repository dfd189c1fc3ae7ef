// CUDA kernels for ops/spatial.h (same signatures and semantics as ops/cpu/spatial.h). Pure data movement copies
// elements of any dtype exactly; kernels that add or scale compute bf16/f16 in fp32 and sums in fp64.
#pragma once
#include "ops/spatial.h"

namespace dcae::ops::cuda {

Tensor pixel_unshuffle_forward(const Tensor& x, int64_t factor);
Tensor pixel_shuffle_forward(const Tensor& x, int64_t factor);
Tensor channel_group_sum_forward(const Tensor& x, int64_t out_channels, double scale);
Tensor channel_repeat_forward(const Tensor& x, int64_t out_channels, double scale);
Tensor upsample_nearest_forward(const Tensor& x, int64_t factor);
Tensor upsample_nearest_backward(const Tensor& grad, int64_t factor);
Tensor pad_forward(const Tensor& x, const Padding2d& padding, double value);

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_pixel_unshuffle_forward ~,
#define DCAE_CUDA_KERNEL_pixel_shuffle_forward ~,
#define DCAE_CUDA_KERNEL_channel_group_sum_forward ~,
#define DCAE_CUDA_KERNEL_channel_repeat_forward ~,
#define DCAE_CUDA_KERNEL_upsample_nearest_forward ~,
#define DCAE_CUDA_KERNEL_upsample_nearest_backward ~,
#define DCAE_CUDA_KERNEL_pad_forward ~,
