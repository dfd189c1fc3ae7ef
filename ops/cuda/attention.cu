// Scaled dot-product attention, host side: operand layouts, the mask in the compute dtype, outputs, and the choice
// between cuDNN's fused flash attention (cudnn_attention.cpp), our tensor-core kernels (attention_mma.cu) and the
// SIMT ones (attention_simt.cu).
#include <string>

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/attention.h"
#include "ops/cuda/attention_common.h"
#include "ops/cuda/cudnn_attention.h"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;
using namespace attention_detail;

namespace {

DType compute_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

// t with a unit-stride last dim; with `rows_16b` also every row 16-byte aligned (base and strides of dims of size
// > 1 a multiple of 8 elements), copying only when needed.
Tensor operand(const Tensor& t, bool rows_16b) {
  Tensor out = t.size(3) <= 1 || t.strides()[3] == 1 ? t : t.contiguous();
  if (!rows_16b) return out;
  bool aligned = aligned16(out.raw_data());
  for (int64_t dim = 0; dim < 3; ++dim) aligned = aligned && (out.size(dim) <= 1 || out.strides()[dim] % 8 == 0);
  return aligned ? out : out.clone();
}

Strides3 strides_of(const Tensor& t) { return {t.strides()[0], t.strides()[1], t.strides()[2]}; }

// The mask as a [B, H, Lq, Lk] view (zero strides where it broadcasts) in the compute dtype; undefined stays so.
Tensor expanded_mask(const Tensor& mask, DType compute, const AttentionParams& p) {
  if (!mask.defined()) return mask;
  return mask.to(compute).expand({p.batch, p.heads, p.lq, p.lk});
}

AttentionParams shape_params(const Tensor& q, const Tensor& v, double scale) {
  AttentionParams p;
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.lq = q.size(2);
  p.lk = v.size(2);
  p.d = q.size(3);
  p.dv_dim = v.size(3);
  p.scale = scale;
  return p;
}

void set_mask(AttentionParams& p, const Tensor& mask) {
  if (!mask.defined()) return;
  p.mask = mask.raw_data();
  for (int i = 0; i < 4; ++i) p.mask_strides[i] = mask.size(i) == 1 ? 0 : mask.strides()[i];
}

}  // namespace

Tensor attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& mask_in,
                         double scale, Tensor& logsumexp) {
  const DType dtype = q_in.dtype(), compute = compute_dtype(dtype);
  AttentionParams p = shape_params(q_in, v_in, scale);
  const bool try_cudnn = cudnn_attention_wanted(p, dtype, mask_in.defined(), false);
  const bool use_mma = mma_attention_supported(dtype, p.d, p.dv_dim);
  const bool rows_16b = use_mma || try_cudnn;
  const Tensor q = operand(q_in, rows_16b), k = operand(k_in, rows_16b), v = operand(v_in, rows_16b);
  const Tensor mask = expanded_mask(mask_in, compute, p);
  Tensor out = empty({p.batch, p.heads, p.lq, p.dv_dim}, dtype, q.device());
  logsumexp = empty({p.batch, p.heads, p.lq}, compute, q.device());
  if (out.numel() == 0 && logsumexp.numel() == 0) return out;
  p.q = q.raw_data();
  p.k = k.raw_data();
  p.v = v.raw_data();
  p.q_strides = strides_of(q);
  p.k_strides = strides_of(k);
  p.v_strides = strides_of(v);
  set_mask(p, mask);
  p.out = out.raw_data();
  p.lse = logsumexp.raw_data();
  const int device = q.device().index;
  DeviceGuard guard(device);
  if (try_cudnn && cudnn_attention_forward(p, dtype, device)) {
    set_last_attention_kernels("cudnn engine " + std::to_string(cudnn_attention_last_engine()));
    return out;
  }
  const cudaStream_t stream = stream_for(q);
  if (use_mma) mma_attention_forward(p, dtype, stream);
  else simt_attention_forward(p, dtype, stream);
  set_last_attention_kernels(use_mma ? "mma" : "simt");
  return out;
}

std::vector<Tensor> attention_backward(const Tensor& grad_in, const Tensor& q_in, const Tensor& k_in,
                                       const Tensor& v_in, const Tensor& mask_in, double scale,
                                       const Tensor& logsumexp_in, const Tensor& out_in, bool want_scores) {
  const DType dtype = q_in.dtype(), compute = compute_dtype(dtype);
  AttentionParams p = shape_params(q_in, v_in, scale);
  const bool try_cudnn = cudnn_attention_wanted(p, dtype, mask_in.defined() || want_scores, true);
  const bool use_mma = mma_attention_supported(dtype, p.d, p.dv_dim);
  const bool rows_16b = use_mma || try_cudnn;
  const Tensor q = operand(q_in, rows_16b), k = operand(k_in, rows_16b), v = operand(v_in, rows_16b);
  const Tensor grad = operand(grad_in.to(dtype), rows_16b);
  Tensor lse = logsumexp_in.to(compute).contiguous();
  if (try_cudnn && !aligned16(lse.raw_data())) lse = lse.clone();  // cuDNN's graph declares 16-byte alignment
  const Tensor mask = expanded_mask(mask_in, compute, p);
  const Device device = q.device();
  Tensor dq = empty(q_in.shape(), dtype, device), dk = empty(k_in.shape(), dtype, device);
  Tensor dv = empty(v_in.shape(), dtype, device);
  Tensor dscores = want_scores ? empty({p.batch, p.heads, p.lq, p.lk}, compute, device) : Tensor();
  const DType out_dtype = grad_in.dtype();
  p.q = q.raw_data();
  p.k = k.raw_data();
  p.v = v.raw_data();
  p.grad = grad.raw_data();
  p.q_strides = strides_of(q);
  p.k_strides = strides_of(k);
  p.v_strides = strides_of(v);
  p.grad_strides = strides_of(grad);
  set_mask(p, mask);
  p.lse = const_cast<void*>(lse.raw_data());
  p.dq = dq.raw_data();
  p.dk = dk.raw_data();
  p.dv = dv.raw_data();
  p.dscores = want_scores ? dscores.raw_data() : nullptr;
  // cuDNN and the tensor-core backward read D = rowsum(dO O) from the forward output (recomputed when not given).
  Tensor out;
  if (try_cudnn || use_mma) {
    Tensor recomputed_lse;
    out = out_in.defined() ? operand(out_in.to(dtype), true)
                           : operand(attention_forward(q_in, k_in, v_in, mask_in, scale, recomputed_lse), true);
    p.o = out.raw_data();
    p.o_strides = strides_of(out);
  }
  DeviceGuard guard(device.index);
  if (try_cudnn && cudnn_attention_backward(p, dtype, device.index)) {
    set_last_attention_kernels("cudnn engine " + std::to_string(cudnn_attention_last_engine()));
    return {dq.to(out_dtype), dk.to(out_dtype), dv.to(out_dtype), Tensor()};
  }
  Tensor di, lse_log2, dq_accum;
  if (use_mma) {
    p.lq_padded = mma_backward_padded_rows(p.lq);
    di = empty({p.batch * p.heads * p.lq_padded}, DType::f32, device);
    lse_log2 = empty({p.batch * p.heads * p.lq_padded}, DType::f32, device);
    dq_accum = empty({p.batch * p.heads * p.lq * p.d}, DType::f32, device);
    p.lse_log2 = static_cast<float*>(lse_log2.raw_data());
    p.dq_accum = static_cast<float*>(dq_accum.raw_data());
  } else {
    di = empty({p.batch, p.heads, p.lq}, compute, device);
  }
  p.di = di.raw_data();
  if (p.batch * p.heads > 0) {
    const cudaStream_t stream = stream_for(q);
    if (use_mma) mma_attention_backward(p, dtype, stream);
    else simt_attention_backward(p, dtype, stream);
  }
  set_last_attention_kernels(use_mma ? "mma" : "simt");
  return {dq.to(out_dtype), dk.to(out_dtype), dv.to(out_dtype), want_scores ? dscores.to(out_dtype) : Tensor()};
}

}  // namespace dcae::ops::cuda
