#include "ops/cuda/matmul.h"

#include <algorithm>

#include "ops/cuda/gemm.h"

namespace dcae::ops::cuda {

namespace {

// One operand as the GEMM reads it: the tensor (perhaps a packed copy), its stored-matrix leading dimension and
// whether the stored matrix is the transpose of the operand.
struct Operand {
  Tensor tensor;
  int64_t ld = 0;
  bool transposed = false;
};

// Reads the last two dims [R, C] of t in place when one of them has unit stride: row-major with ld = stride of a
// row, or column-major, which is the transpose of a row-major [C, R]. A size-1 dim may have any stride.
bool read_in_place(const Tensor& t, int64_t& ld, bool& flipped) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t row_stride = t.strides()[t.dim() - 2], col_stride = t.strides()[t.dim() - 1];
  if (cols == 1 || col_stride == 1) {
    ld = rows == 1 ? std::max<int64_t>(cols, 1) : row_stride;
    flipped = false;
    if (ld >= std::max<int64_t>(cols, 1)) return true;
  }
  if (rows == 1 || row_stride == 1) {
    ld = cols == 1 ? std::max<int64_t>(rows, 1) : col_stride;
    flipped = true;
    if (ld >= std::max<int64_t>(rows, 1)) return true;
  }
  return false;
}

Operand operand_of(const Tensor& t, bool transpose) {
  Operand op;
  bool flipped = false;
  if (read_in_place(t, op.ld, flipped)) {
    op.tensor = t;
  } else {
    op.tensor = t.contiguous();
    op.ld = std::max<int64_t>(t.size(-1), 1);
    flipped = false;
  }
  op.transposed = transpose != flipped;
  return op;
}

// Element strides of t's batch dims broadcast to `batch` (0 along broadcast dims).
Shape batch_strides(const Tensor& t, const Shape& batch) {
  Shape strides(batch.size(), 0);
  const int64_t t_batch = t.dim() - 2, offset = static_cast<int64_t>(batch.size()) - t_batch;
  for (int64_t d = 0; d < t_batch; ++d)
    if (t.size(d) != 1) strides[offset + d] = t.strides()[d];
  return strides;
}

// True when dims [first, end) of `batch` walk `strides` as one arithmetic sequence (each dim's stride is the
// innermost stride times the extent of the dims inside it; size-1 dims do not count); `step` gets that stride.
bool collapses(const Shape& batch, const Shape& strides, size_t first, int64_t& step) {
  step = 0;
  bool seen = false;
  int64_t inner_extent = 1;
  for (size_t d = batch.size(); d-- > first;) {
    if (batch[d] == 1) continue;
    if (!seen) {
      step = strides[d];
      seen = true;
    } else if (strides[d] != step * inner_extent) {
      return false;
    }
    inner_extent *= batch[d];
  }
  return true;
}

Tensor multiply(const Tensor& a_in, const Tensor& b_in, bool transpose_a, bool transpose_b, const Tensor& bias) {
  const int64_t m = transpose_a ? a_in.size(-1) : a_in.size(-2);
  const int64_t k = transpose_a ? a_in.size(-2) : a_in.size(-1);
  const int64_t n = transpose_b ? b_in.size(-2) : b_in.size(-1);
  const Shape batch =
      broadcast_shapes(Shape(a_in.shape().begin(), a_in.shape().end() - 2), Shape(b_in.shape().begin(), b_in.shape().end() - 2));
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = empty(out_shape, a_in.dtype(), a_in.device());
  if (out.numel() == 0) return out;

  const Operand a = operand_of(a_in, transpose_a), b = operand_of(b_in, transpose_b);
  const Shape strides_a = batch_strides(a.tensor, batch), strides_b = batch_strides(b.tensor, batch);
  const int device = a_in.device().index;
  const DType dtype = a_in.dtype();
  const size_t element = dtype_size(dtype);
  const int64_t count = shape_numel(batch);
  int64_t step_a = 0, step_b = 0;

  // A 2-D (or batch-broadcast) b with an untransposed a whose batches continue its rows: one GEMM over all rows.
  if (!a.transposed && collapses(batch, strides_a, 0, step_a) && collapses(batch, strides_b, 0, step_b) &&
      step_b == 0 && (count == 1 || step_a == m * a.ld)) {
    const bool bias_done = gemm(dtype, device, count * m, n, k, 1, {a.tensor.raw_data(), a.ld, 0, false},
                                {b.tensor.raw_data(), b.ld, 0, b.transposed}, {out.raw_data(), n, 0},
                                bias.defined() ? bias.raw_data() : nullptr);
    if (bias.defined() && !bias_done) out.add_(bias);
    return out;
  }

  // Innermost batch dims that collapse to one stride in both operands run as one strided-batched GEMM; the
  // dims outside them (rare: mixed broadcast patterns) loop on the host.
  size_t split = 0;
  while (!(collapses(batch, strides_a, split, step_a) && collapses(batch, strides_b, split, step_b))) ++split;
  int64_t inner = 1;
  for (size_t d = split; d < batch.size(); ++d) inner *= batch[d];
  const int64_t outer = count / inner;
  const bool fused_bias = bias.defined() && outer == 1;  // alignment, hence the plan, may differ between calls
  bool bias_done = false;
  Shape index(split, 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t offset_a = 0, offset_b = 0;
    for (size_t d = 0; d < split; ++d) offset_a += index[d] * strides_a[d], offset_b += index[d] * strides_b[d];
    const char* pa = static_cast<const char*>(a.tensor.raw_data()) + offset_a * element;
    const char* pb = static_cast<const char*>(b.tensor.raw_data()) + offset_b * element;
    char* po = static_cast<char*>(out.raw_data()) + o * inner * m * n * element;
    bias_done = gemm(dtype, device, m, n, k, inner, {pa, a.ld, step_a, a.transposed},
                     {pb, b.ld, step_b, b.transposed}, {po, n, m * n}, fused_bias ? bias.raw_data() : nullptr, 0);
    for (size_t d = split; d-- > 0;) {  // odometer over the outer dims
      if (++index[d] < batch[d]) break;
      index[d] = 0;
    }
  }
  if (bias.defined() && !(fused_bias && bias_done)) out.add_(bias);
  return out;
}

}  // namespace

Tensor matmul_forward(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  return multiply(a, b, transpose_a, transpose_b, Tensor());
}

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return multiply(x, weight, false, true, bias.contiguous());
}

}  // namespace dcae::ops::cuda
