// ReLU linear attention kernels (DC-AE LiteMLA core, spec 4.2.1), declared in ops/cpu/attention.h. One
// (image, head) pair per task. Per head the Ntok = H*W tokens are rows: Q, K, V are Ntok x d strided views of the
// NHWC qkv map (row stride 3C), so no transpose or gather is needed.
//
// Linear form (tokens as rows, so M here is the transpose of the spec's M):
//   V' = [V, 1] (Ntok x (d+1)),  M = K^T V' (d x (d+1)),  O = Q M (Ntok x (d+1)),  Y = O[:, :d] / (O[:, d] + eps).
// Quadratic form: A = K Q^T (A[m, n] = k_m . q_n), s = column sums of A, Y[n] = (A^T V)[n] / (s[n] + eps).
// O[:, d] equals s, so both give the same Y.
#include <Eigen/Dense>

#include "ops/cpu/attention.h"
#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

template <typename T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <typename T>
using StridedConst = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using StridedMut = Eigen::Map<Matrix<T>, 0, Eigen::OuterStride<>>;

struct Layout {
  int64_t images, tokens, channels, head_dim, heads;  // channels = C (output); the input has 3C
  Layout(const Tensor& qkv, int64_t d)
      : images(qkv.size(0)),
        tokens(qkv.size(1) * qkv.size(2)),
        channels(qkv.size(3) / 3),
        head_dim(d),
        heads(qkv.size(3) / (3 * d)) {}
  int64_t in_offset(int64_t image, int64_t head) const { return image * tokens * 3 * channels + head * 3 * head_dim; }
  int64_t out_offset(int64_t image, int64_t head) const { return image * tokens * channels + head * head_dim; }
};

// One head's ReLU'd q and k and raw v, copied out of the strided qkv map.
template <typename T>
struct HeadInputs {
  Matrix<T> q, k, v;
  HeadInputs(const T* head, const Layout& s) {
    const int64_t n = s.tokens, d = s.head_dim;
    const Eigen::OuterStride<> stride(3 * s.channels);
    q = StridedConst<T>(head, n, d, stride).cwiseMax(T(0));
    k = StridedConst<T>(head + d, n, d, stride).cwiseMax(T(0));
    v = StridedConst<T>(head + 2 * d, n, d, stride);
  }
};

// What both forms share for backward: the output Y and 1 / (denominator + eps) per token.
template <typename T>
struct HeadOutputs {
  Matrix<T> y;
  Vector<T> inv_den;
};

template <typename T>
HeadOutputs<T> linear_forward(const HeadInputs<T>& in, T eps, Matrix<T>& m) {
  const int64_t n = in.q.rows(), d = in.q.cols();
  Matrix<T> v_ones(n, d + 1);
  v_ones.leftCols(d) = in.v;
  v_ones.col(d).setOnes();
  m.noalias() = in.k.transpose() * v_ones;
  const Matrix<T> o = in.q * m;
  HeadOutputs<T> out;
  out.inv_den = (o.col(d).array() + eps).inverse();
  out.y = out.inv_den.asDiagonal() * o.leftCols(d);
  return out;
}

template <typename T>
HeadOutputs<T> quadratic_forward(const HeadInputs<T>& in, T eps, Matrix<T>& a) {
  a.noalias() = in.k * in.q.transpose();
  HeadOutputs<T> out;
  out.inv_den = (a.colwise().sum().transpose().array() + eps).inverse();
  out.y = out.inv_den.asDiagonal() * (a.transpose() * in.v);
  return out;
}

// Writes this head's gradients (before/after the ReLUs as appropriate) into the strided dqkv map.
template <typename T>
void store_head_grads(T* head, const Layout& s, const HeadInputs<T>& in, const Matrix<T>& dq, const Matrix<T>& dk,
                      const Matrix<T>& dv) {
  const int64_t n = s.tokens, d = s.head_dim;
  const Eigen::OuterStride<> stride(3 * s.channels);
  // ReLU passes the gradient only where its input was positive, i.e. where the ReLU'd value is positive.
  StridedMut<T>(head, n, d, stride) = (in.q.array() > T(0)).select(dq, T(0));
  StridedMut<T>(head + d, n, d, stride) = (in.k.array() > T(0)).select(dk, T(0));
  StridedMut<T>(head + 2 * d, n, d, stride) = dv;
}

}  // namespace

Tensor relu_linear_attention_forward(const Tensor& qkv_in, int64_t head_dim, double eps, bool quadratic) {
  const Tensor qkv = compute_input(qkv_in);
  const Layout s(qkv, head_dim);
  Tensor out = empty({qkv.size(0), qkv.size(1), qkv.size(2), s.channels}, qkv.dtype());
  visit_float(qkv.dtype(), "relu_linear_attention", [&]<typename T>() {
    parallel_for(s.images * s.heads, 1, [&](int64_t begin, int64_t end) {
      Matrix<T> scratch;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t image = task / s.heads, head = task % s.heads;
        const HeadInputs<T> in(qkv.data<T>() + s.in_offset(image, head), s);
        const HeadOutputs<T> res = quadratic ? quadratic_forward(in, static_cast<T>(eps), scratch)
                                             : linear_forward(in, static_cast<T>(eps), scratch);
        StridedMut<T>(out.data<T>() + s.out_offset(image, head), s.tokens, head_dim, Eigen::OuterStride<>(s.channels)) =
            res.y;
      }
    });
  });
  return out.to(qkv_in.dtype());
}

Tensor relu_linear_attention_backward(const Tensor& grad_in, const Tensor& qkv_in, int64_t head_dim, double eps,
                                      bool quadratic) {
  const Tensor qkv = compute_input(qkv_in);
  const Tensor grad = grad_in.to(qkv.dtype()).contiguous();
  const Layout s(qkv, head_dim);
  Tensor dqkv = empty(qkv.shape(), qkv.dtype());
  visit_float(qkv.dtype(), "relu_linear_attention backward", [&]<typename T>() {
    parallel_for(s.images * s.heads, 1, [&](int64_t begin, int64_t end) {
      Matrix<T> saved;  // M (linear) or A (quadratic)
      for (int64_t task = begin; task < end; ++task) {
        const int64_t image = task / s.heads, head = task % s.heads, n = s.tokens, d = head_dim;
        const HeadInputs<T> in(qkv.data<T>() + s.in_offset(image, head), s);
        const HeadOutputs<T> res = quadratic ? quadratic_forward(in, static_cast<T>(eps), saved)
                                             : linear_forward(in, static_cast<T>(eps), saved);
        const Matrix<T> g =
            StridedConst<T>(grad.data<T>() + s.out_offset(image, head), n, d, Eigen::OuterStride<>(s.channels));
        // Y = numerator * inv_den: d numerator = G * inv_den; d denominator = -inv_den * sum_i G Y.
        const Matrix<T> d_num = res.inv_den.asDiagonal() * g;
        const Vector<T> d_den = -(res.inv_den.array() * (g.array() * res.y.array()).rowwise().sum());
        Matrix<T> dq, dk, dv;
        if (quadratic) {
          const Matrix<T>& a = saved;
          Matrix<T> da = in.v * d_num.transpose();  // numerator = A^T V
          da.rowwise() += d_den.transpose();        // denominator = column sums of A
          dv.noalias() = a * d_num;
          dk.noalias() = da * in.q;
          dq.noalias() = da.transpose() * in.k;
        } else {
          const Matrix<T>& m = saved;
          Matrix<T> d_o(n, d + 1);  // O = Q M; numerator = O[:, :d], denominator = O[:, d]
          d_o.leftCols(d) = d_num;
          d_o.col(d) = d_den;
          const Matrix<T> dm = in.q.transpose() * d_o;
          dq.noalias() = d_o * m.transpose();
          Matrix<T> v_ones(n, d + 1);  // M = K^T [V, 1]
          v_ones.leftCols(d) = in.v;
          v_ones.col(d).setOnes();
          dk.noalias() = v_ones * dm.transpose();
          dv.noalias() = in.k * dm.leftCols(d);
        }
        store_head_grads(dqkv.data<T>() + s.in_offset(image, head), s, in, dq, dk, dv);
      }
    });
  });
  return dqkv.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
