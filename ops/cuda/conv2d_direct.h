// Direct NHWC convolution kernels (no library): one thread per output element, the sums in the compute type
// (fp32 for f32/bf16/f16, fp64 for f64). They cover what cuDNN may not (f64 NHWC, unusual shapes) and compete with
// cuDNN's engines for depthwise convolutions, whose weight gradient has a dedicated two-pass kernel for square
// 3x3, 5x5 and 7x7 filters. Filters are KRSC ([Cout, kh, kw, Cin / groups]); buffers are contiguous, on the
// current stream of `device`.
#pragma once
#include "core/tensor/tensor.h"
#include "ops/cuda/conv2d_geometry.h"

namespace dcae::ops::cuda {

void direct_conv2d_forward(const ConvGeometry& g, DType dtype, int device, const void* x, const void* w, void* y);
void direct_conv2d_backward_data(const ConvGeometry& g, DType dtype, int device, const void* dy, const void* w,
                                 void* dx);
void direct_conv2d_backward_filter(const ConvGeometry& g, DType dtype, int device, const void* x, const void* dy,
                                   void* dw);

}  // namespace dcae::ops::cuda
