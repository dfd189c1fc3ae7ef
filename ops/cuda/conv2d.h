// CUDA kernels for ops/conv2d.h (same signatures as ops/cpu/conv2d.h): NHWC activations, PyTorch-layout weights.
//
// Paths: unpadded stride-1 1x1 convolutions are GEMMs on the activations (cuBLASLt, groups as a strided batch,
// bias in the epilogue); everything else runs through cuDNN 9's graph API with the filter transformed to KRSC
// once per call, or through our direct kernels (ops/cuda/conv2d_direct.h) where cuDNN has no engine or, for
// depthwise convolutions, where they are faster. A forward bias is added in cuDNN's epilogue where a fused
// conv+bias engine exists and beats convolution-then-add. On the first call of each problem (direction, shape,
// dtype, alignment) the candidates are timed on the call's own buffers and the fastest is kept (per thread); for
// problems of >= 2^34 multiply-adds a local search over the winning cuDNN plan's knobs follows (conv2d.cpp,
// DCAE_CONV_KNOB_SEARCH=0 turns it off). The first call of a shape therefore synchronises the device, so warm up
// before capturing CUDA graphs.
#pragma once
#include "ops/conv2d.h"

namespace dcae::ops::cuda {

Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params);
Tensor conv2d_backward_input(const Tensor& grad_out, const Tensor& weight, const Shape& x_shape,
                             const Conv2dParams& params);
Tensor conv2d_backward_weight(const Tensor& grad_out, const Tensor& x, const Shape& weight_shape,
                              const Conv2dParams& params);

// act(conv2d_forward(x, weight, bias)), rounded once: a cuDNN plan with the bias and the activation in its
// epilogue, or the convolution without bias then one vectorised bias+activation pass, whichever ran faster on
// first use (1x1 GEMM convolutions always take the second form). Undefined without a bias (the caller composes).
// Used only without autograd.
enum class ConvActivation { relu, silu };
Tensor conv2d_forward_bias_activation(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                      const Conv2dParams& params, ConvActivation act);

// Which implementations the non-GEMM convolutions may use: all (the default), only cuDNN (an error where it has
// no engine), or only the direct kernels. For tests and benchmarks; returns the previous setting.
enum class ConvBackend { automatic, cudnn_only, direct_only };
ConvBackend set_conv_backend(ConvBackend backend);

// How input gradients run where they can be a forward convolution (stride 1, groups 1, a square kernel, padding
// below the kernel size): dx = conv2d(dy, w') with w' the filter transposed (in <-> out channels) and flipped in
// space (ops/cuda/conv2d_flip.h), padding kh - 1 - padding. `automatic` times that against cuDNN's input-gradient
// engines on first use and keeps the faster (with autotuning off: the input-gradient engines); `dgrad` and
// `flipped_forward` force one where it applies. Elsewhere the input-gradient engines run. Returns the previous
// setting.
enum class InputGradientPath { automatic, dgrad, flipped_forward };
InputGradientPath set_input_gradient_path(InputGradientPath path);

// What ran for the last convolution this thread computed outside the GEMM path: "cudnn engine <id>",
// "direct" or "gemm"; an input gradient run as a forward convolution reads "flipped forward, <what ran>". For
// benchmarks and tests.
const char* last_conv_algorithm();

}  // namespace dcae::ops::cuda

#define DCAE_CUDA_KERNEL_conv2d_forward ~,
#define DCAE_CUDA_KERNEL_conv2d_backward_input ~,
#define DCAE_CUDA_KERNEL_conv2d_backward_weight ~,
