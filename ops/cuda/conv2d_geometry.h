// Sizes of one 2-D convolution as the CUDA conv2d paths (cuDNN, GEMM, direct kernels) see it. Activations are
// NHWC; filters are KRSC, i.e. [Cout, kh, kw, Cin / groups] (the NHWC filter layout cuDNN wants), which is the
// PyTorch layout [Cout, Cin / groups, kh, kw] itself when Cin / groups == 1 or the kernel is 1x1.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define DCAE_CONV_HD __host__ __device__
#else
#define DCAE_CONV_HD
#endif

namespace dcae::ops::cuda {

struct ConvGeometry {
  int64_t n, h, w, cin, cout, kh, kw, stride, pad, groups, ho, wo;
  DCAE_CONV_HD int64_t cin_g() const { return cin / groups; }
  DCAE_CONV_HD int64_t cout_g() const { return cout / groups; }
  bool depthwise() const { return groups == cin && groups == cout; }
  bool pointwise() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }
  bool filter_is_krsc() const { return cin / groups == 1 || kh * kw == 1; }  // no transform needed
};

enum class ConvDirection { forward, backward_data, backward_filter };

}  // namespace dcae::ops::cuda
