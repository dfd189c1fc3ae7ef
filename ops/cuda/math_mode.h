// Numerics switches shared by the library-backed CUDA kernels (cuBLASLt GEMMs, cuDNN convolutions).
#pragma once

namespace dcae::ops::cuda {

// Whether f32 GEMMs and convolutions may run on TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation).
// Off by default, so f32 results agree with the CPU to ~1e-6; DCAE_ALLOW_TF32=1 in the environment turns it on at
// start-up. Plans chosen under one setting are never reused under the other.
bool allow_tf32();
void set_allow_tf32(bool allow);

// Whether convolutions time the cuDNN engines (and our direct kernels, where they apply) on the first call of each
// shape and keep the fastest (the default), or take cuDNN's first heuristic choice. DCAE_CUDNN_AUTOTUNE=0 turns
// timing off at start-up.
bool conv_autotune();
void set_conv_autotune(bool autotune);

}  // namespace dcae::ops::cuda
