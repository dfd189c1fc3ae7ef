// Scaled dot-product attention kernels (ReLU linear attention is in linear_attention.cpp). One (batch, head) pair
// per task; the GEMMs go through Eigen maps over contiguous compute-dtype buffers.
#include "ops/cpu/attention.h"

#include <Eigen/Dense>
#include <cmath>
#include <limits>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

template <typename T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const Matrix<T>>;
template <typename T>
using MutMap = Eigen::Map<Matrix<T>>;

struct Dims {
  int64_t batch, heads, lq, lk, d, dv;
  Dims(const Tensor& q, const Tensor& v)
      : batch(q.size(0)), heads(q.size(1)), lq(q.size(2)), lk(v.size(2)), d(q.size(3)), dv(v.size(3)) {}
};

// The mask in the compute dtype, viewed (zero strides where broadcast) as [B, H, Lq, Lk]; undefined stays undefined.
Tensor expanded_mask(const Tensor& mask, DType dtype, const Dims& s) {
  if (!mask.defined()) return mask;
  return mask.to(dtype).expand({s.batch, s.heads, s.lq, s.lk});
}

// scores = scale * q k^T + mask for one (batch, head) pair.
template <typename T>
void scaled_scores(Matrix<T>& scores, const ConstMap<T>& q, const ConstMap<T>& k, const Tensor& mask, int64_t b,
                   int64_t h, T scale) {
  scores.noalias() = scale * (q * k.transpose());
  if (!mask.defined()) return;
  const Shape& st = mask.strides();
  const T* slab = mask.data<T>() + b * st[0] + h * st[1];
  for (int64_t i = 0; i < scores.rows(); ++i)
    for (int64_t j = 0; j < scores.cols(); ++j) scores(i, j) += slab[i * st[2] + j * st[3]];
}

}  // namespace

Tensor attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& mask_in,
                         double scale, Tensor& logsumexp) {
  const Tensor q = compute_input(q_in), k = compute_input(k_in), v = compute_input(v_in);
  const Dims s(q, v);
  const Tensor mask = expanded_mask(mask_in, q.dtype(), s);
  Tensor out = empty({s.batch, s.heads, s.lq, s.dv}, q.dtype());
  logsumexp = empty({s.batch, s.heads, s.lq}, q.dtype());
  visit_float(q.dtype(), "scaled_dot_product_attention", [&]<typename T>() {
    parallel_for(s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
      Matrix<T> probs(s.lq, s.lk);
      for (int64_t bh = begin; bh < end; ++bh) {
        const ConstMap<T> qm(q.data<T>() + bh * s.lq * s.d, s.lq, s.d);
        const ConstMap<T> km(k.data<T>() + bh * s.lk * s.d, s.lk, s.d);
        const ConstMap<T> vm(v.data<T>() + bh * s.lk * s.dv, s.lk, s.dv);
        MutMap<T> om(out.data<T>() + bh * s.lq * s.dv, s.lq, s.dv);
        T* lse = logsumexp.data<T>() + bh * s.lq;
        scaled_scores<T>(probs, qm, km, mask, bh / s.heads, bh % s.heads, static_cast<T>(scale));
        for (int64_t i = 0; i < s.lq; ++i) {
          const T row_max = s.lk > 0 ? probs.row(i).maxCoeff() : -std::numeric_limits<T>::infinity();
          if (row_max == -std::numeric_limits<T>::infinity()) {  // every key masked out
            probs.row(i).setZero();
            lse[i] = row_max;
            continue;
          }
          double total = 0.0;
          for (int64_t j = 0; j < s.lk; ++j) total += probs(i, j) = std::exp(probs(i, j) - row_max);
          probs.row(i) *= static_cast<T>(1.0 / total);
          lse[i] = row_max + static_cast<T>(std::log(total));
        }
        om.noalias() = probs * vm;
      }
    });
  });
  return out.to(q_in.dtype());
}

std::vector<Tensor> attention_backward(const Tensor& grad_in, const Tensor& q_in, const Tensor& k_in,
                                       const Tensor& v_in, const Tensor& mask_in, double scale,
                                       const Tensor& logsumexp_in, const Tensor& /*out*/, bool want_scores) {
  const Tensor q = compute_input(q_in), k = compute_input(k_in), v = compute_input(v_in);
  const Tensor g = grad_in.to(q.dtype()).contiguous();
  const Tensor logsumexp = logsumexp_in.to(q.dtype()).contiguous();
  const Dims s(q, v);
  const Tensor mask = expanded_mask(mask_in, q.dtype(), s);
  Tensor dq = empty(q.shape(), q.dtype()), dk = empty(k.shape(), q.dtype()), dv = empty(v.shape(), q.dtype());
  Tensor dscores = want_scores ? empty({s.batch, s.heads, s.lq, s.lk}, q.dtype()) : Tensor();
  visit_float(q.dtype(), "scaled_dot_product_attention backward", [&]<typename T>() {
    parallel_for(s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
      Matrix<T> probs(s.lq, s.lk), dprobs(s.lq, s.lk);
      for (int64_t bh = begin; bh < end; ++bh) {
        const ConstMap<T> qm(q.data<T>() + bh * s.lq * s.d, s.lq, s.d);
        const ConstMap<T> km(k.data<T>() + bh * s.lk * s.d, s.lk, s.d);
        const ConstMap<T> vm(v.data<T>() + bh * s.lk * s.dv, s.lk, s.dv);
        const ConstMap<T> gm(g.data<T>() + bh * s.lq * s.dv, s.lq, s.dv);
        const T* lse = logsumexp.data<T>() + bh * s.lq;
        scaled_scores<T>(probs, qm, km, mask, bh / s.heads, bh % s.heads, static_cast<T>(scale));
        for (int64_t i = 0; i < s.lq; ++i) {
          if (lse[i] == -std::numeric_limits<T>::infinity()) {
            probs.row(i).setZero();
            continue;
          }
          for (int64_t j = 0; j < s.lk; ++j) probs(i, j) = std::exp(probs(i, j) - lse[i]);
        }
        MutMap<T>(dv.data<T>() + bh * s.lk * s.dv, s.lk, s.dv).noalias() = probs.transpose() * gm;
        dprobs.noalias() = gm * vm.transpose();
        // Softmax backward per row: dS = P * (dP - sum_j P dP).
        for (int64_t i = 0; i < s.lq; ++i) {
          double dot = 0.0;
          for (int64_t j = 0; j < s.lk; ++j) dot += static_cast<double>(probs(i, j)) * dprobs(i, j);
          for (int64_t j = 0; j < s.lk; ++j) dprobs(i, j) = probs(i, j) * (dprobs(i, j) - static_cast<T>(dot));
        }
        if (want_scores) MutMap<T>(dscores.data<T>() + bh * s.lq * s.lk, s.lq, s.lk) = dprobs;
        const T sc = static_cast<T>(scale);
        MutMap<T>(dq.data<T>() + bh * s.lq * s.d, s.lq, s.d).noalias() = sc * (dprobs * km);
        MutMap<T>(dk.data<T>() + bh * s.lk * s.d, s.lk, s.d).noalias() = sc * (dprobs.transpose() * qm);
      }
    });
  });
  const DType out_dtype = grad_in.dtype();
  return {dq.to(out_dtype), dk.to(out_dtype), dv.to(out_dtype), want_scores ? dscores.to(out_dtype) : Tensor()};
}

}  // namespace dcae::ops::cpu
