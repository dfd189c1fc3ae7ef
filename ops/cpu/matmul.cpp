#include "ops/cpu/matmul.h"

#include <Eigen/Core>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

template <typename T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MatrixMap = Eigen::Map<RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// A view whose last two dims are a transpose of a contiguous tensor is read as that tensor with the transpose
// flag flipped, so operands like ops::transpose(w) cost no copy.
Tensor without_transposed_view(const Tensor& t, bool& transposed) {
  if (t.dim() < 2 || t.is_contiguous()) return t;
  Tensor flipped = t.transpose(-1, -2);
  if (!flipped.is_contiguous()) return t;
  transposed = !transposed;
  return flipped;
}

Shape batch_shape(const Tensor& t) { return Shape(t.shape().begin(), t.shape().end() - 2); }

// Element offset of each entry of the broadcast `batch` in the contiguous tensor `t` (a broadcast dim stays put).
std::vector<int64_t> batch_offsets(const Tensor& t, const Shape& batch) {
  Shape full = batch;
  full.push_back(t.size(-2));
  full.push_back(t.size(-1));
  const Shape strides = t.expand(full).strides();
  const int64_t count = shape_numel(batch);
  std::vector<int64_t> offsets(count);
  Shape index(batch.size(), 0);
  int64_t offset = 0;
  for (int64_t i = 0; i < count; ++i) {
    offsets[i] = offset;
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {  // odometer over the batch dims
      offset += strides[d];
      if (++index[d] < batch[d]) break;
      offset -= strides[d] * batch[d];
      index[d] = 0;
    }
  }
  return offsets;
}

}  // namespace

template <typename T>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  if (m == 0 || n == 0) return;
  MatrixMap<T> cm(c, m, n, Eigen::OuterStride<>(ldc));
  if (k == 0) {
    if (!accumulate) cm.setZero();
    return;
  }
  const ConstMatrixMap<T> am(a, transpose_a ? k : m, transpose_a ? m : k, Eigen::OuterStride<>(lda));
  const ConstMatrixMap<T> bm(b, transpose_b ? n : k, transpose_b ? k : n, Eigen::OuterStride<>(ldb));
  auto run = [&](const auto& lhs, const auto& rhs) {
    if (accumulate) {
      cm.noalias() += lhs * rhs;
    } else {
      cm.noalias() = lhs * rhs;
    }
  };
  if (!transpose_a && !transpose_b) run(am, bm);
  else if (!transpose_a) run(am, bm.transpose());
  else if (!transpose_b) run(am.transpose(), bm);
  else run(am.transpose(), bm.transpose());
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*,
                          int64_t, bool);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*, int64_t,
                           double*, int64_t, bool);

Tensor matmul_forward(const Tensor& a_in, const Tensor& b_in, bool transpose_a, bool transpose_b) {
  const Tensor a = compute_input(without_transposed_view(a_in, transpose_a));
  const Tensor b = compute_input(without_transposed_view(b_in, transpose_b));
  const int64_t m = transpose_a ? a.size(-1) : a.size(-2);
  const int64_t k = transpose_a ? a.size(-2) : a.size(-1);
  const int64_t n = transpose_b ? b.size(-2) : b.size(-1);
  const Shape batch = broadcast_shapes(batch_shape(a), batch_shape(b));
  const int64_t count = shape_numel(batch);
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = empty(out_shape, a.dtype());

  visit_float(a.dtype(), "matmul", [&]<typename T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = out.data<T>();
    const int64_t lda = a.size(-1), ldb = b.size(-1);
    if (b.dim() == 2 && !transpose_a) {  // one b shared by every batch entry: fold a's batch into its rows
      gemm(false, transpose_b, count * m, n, k, pa, lda, pb, ldb, pc, n, false);
      return;
    }
    const std::vector<int64_t> offsets_a = batch_offsets(a, batch), offsets_b = batch_offsets(b, batch);
    auto multiply = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        gemm(transpose_a, transpose_b, m, n, k, pa + offsets_a[i], lda, pb + offsets_b[i], ldb, pc + i * m * n, n,
             false);
    };
    // Enough independent products to occupy every thread, and enough work to pay for a parallel region: one
    // whole GEMM per thread (Eigen then runs each single-threaded). Otherwise Eigen splits each product itself.
    if (count >= omp_get_max_threads() && count * m * n * k >= (int64_t{1} << 17)) {
      parallel_for(count, 1, multiply);
    } else {
      multiply(0, count);
    }
  });
  return out.to(a_in.dtype());
}

Tensor linear_forward(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in) {
  const Tensor x = compute_input(x_in), weight = compute_input(weight_in), bias = compute_input(bias_in);
  const int64_t in = x.size(-1), features = weight.size(0);
  const int64_t rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape out_shape = x.shape();
  out_shape.back() = features;
  Tensor out = empty(out_shape, x.dtype());
  visit_float(x.dtype(), "linear", [&]<typename T>() {
    const T* pb = bias.data<T>();
    T* po = out.data<T>();
    // The GEMM accumulates onto the bias broadcast over the rows.
    parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(features, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) std::copy(pb, pb + features, po + r * features);
    });
    gemm(false, true, rows, features, in, x.data<T>(), in, weight.data<T>(), in, po, features, true);
  });
  return out.to(x_in.dtype());
}

}  // namespace dcae::ops::cpu
