// What the scaled dot-product attention kernels (attention_simt.cu, attention_mma.cu) receive from the host side
// (attention.cu). Plain data, usable in host and device code.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor/cuda/stream.h"
#include "core/tensor/dtype.h"

namespace dcae::ops::cuda::attention_detail {

// Element strides of one [B, H, L, D] operand over (B, H, L); the last dim is contiguous.
struct Strides3 {
  int64_t b = 0, h = 0, l = 0;
};

struct AttentionParams {
  // Inputs in the storage dtype (q's); grad is dO (backward only).
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* grad = nullptr;
  // The forward output O (backward only, tensor-core path): D_i = sum_c dO_ic O_ic.
  const void* o = nullptr;
  Strides3 q_strides, k_strides, v_strides, grad_strides, o_strides;
  // Additive mask in the compute dtype (f32, or f64 for f64 inputs), strides over (B, H, Lq, Lk), 0 where it
  // broadcasts; null when there is none.
  const void* mask = nullptr;
  int64_t mask_strides[4] = {0, 0, 0, 0};
  // Outputs, contiguous: out/dq/dk/dv in the storage dtype, lse [B, H, Lq], di [B, H, Lq] and dscores
  // [B, H, Lq, Lk] in the compute dtype. lse is written by forward and read by backward; di is backward scratch.
  void* out = nullptr;
  void* lse = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  void* di = nullptr;  // [B, H, Lq] for the SIMT kernels, [B, H, lq_padded] for the tensor-core ones
  void* dscores = nullptr;
  // Tensor-core backward scratch: dq accumulated in fp32 [B, H, Lq, D] by every key tile (atomics), zeroed first.
  float* dq_accum = nullptr;
  // Tensor-core backward scratch per (B, H) over lq_padded rows (whole query tiles): the log-sum-exp in log2 units
  // (+inf where a row is padding or fully masked); di holds D there too.
  float* lse_log2 = nullptr;
  int64_t lq_padded = 0;
  int64_t batch = 0, heads = 0, lq = 0, lk = 0, d = 0, dv_dim = 0;
  double scale = 1.0;
};

// attention_simt.cu: every float dtype and head size. Forward fills out and lse; backward fills dq, dk, dv (and
// dscores when set), using di as scratch.
void simt_attention_forward(const AttentionParams& p, DType dtype, ::dcae::cuda::StreamHandle stream);
void simt_attention_backward(const AttentionParams& p, DType dtype, ::dcae::cuda::StreamHandle stream);

// attention_mma.cu: bf16/f16 on tensor cores, for mma_attention_supported() shapes.
bool mma_attention_supported(DType dtype, int64_t d, int64_t dv);
void mma_attention_forward(const AttentionParams& p, DType dtype, ::dcae::cuda::StreamHandle stream);
// Backward needs p.o (the forward output), p.dq_accum [B, H, Lq, D] and p.di / p.lse_log2 of
// [B, H, mma_backward_padded_rows(Lq)] floats; D and the log2 log-sum-exp are filled in there.
void mma_attention_backward(const AttentionParams& p, DType dtype, ::dcae::cuda::StreamHandle stream);
int64_t mma_backward_padded_rows(int64_t lq);

// attention_backend.cpp: whether to ask cuDNN for the forward or backward of a problem of `p`'s sizes and `dtype`
// (p.mask and p.dscores not yet set: `masked_or_scores` says whether there is a mask or dscores are wanted), under
// attention_backend().
bool cudnn_attention_wanted(const AttentionParams& p, DType dtype, bool masked_or_scores, bool backward);
// Records what last_attention_kernels() reports for this thread.
void set_last_attention_kernels(std::string kernels);

}  // namespace dcae::ops::cuda::attention_detail
