#include "ops/cuda/cudnn_attention_graph.h"

#include "core/tensor/error.h"

namespace dcae::ops::cuda::attention_detail {

namespace {

using Dims = std::array<int64_t, 4>;

// A tensor of the graph under construction: its descriptor and logical dims.
struct Node {
  const Descriptor* desc = nullptr;
  Dims dims{};
};

// Strides of a packed [d0, d1, d2, d3] tensor.
Dims packed(const Dims& dims) { return {dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1}; }

cudnnDataType_t io_type(DType dtype) {
  DCAE_CHECK(dtype == DType::bf16 || dtype == DType::f16, "cuDNN fused attention runs bf16 or f16, got ", dtype);
  return dtype == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
}

// Adds tensors and operations one at a time; the first refusal is kept with the step that caused it.
class GraphBuilder {
 public:
  explicit GraphBuilder(AttentionGraph& graph) : graph_(graph) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  // A tensor in memory (its uid given) or a virtual intermediate (a fresh uid) or a by-value fp32 scalar.
  Node tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return make_tensor(uid, type, dims, strides, false, false);
  }
  Node intermediate(cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return make_tensor(next_virtual_uid_++, type, dims, strides, true, false);
  }
  Node intermediate(cudnnDataType_t type, const Dims& dims) { return intermediate(type, dims, packed(dims)); }
  Node scalar(int64_t uid) { return make_tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true); }

  // y = x (op) b, or y = op(x) when `b` has no descriptor.
  void pointwise(const char* step, cudnnPointwiseMode_t mode, const Node& x, const Node& b, const Node& y) {
    if (!ok()) return;
    Descriptor& pw = graph_.parts.emplace_back(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (!finalize(pw, step)) return;
    Descriptor& op = graph_.parts.emplace_back(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
    op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, *x.desc);
    if (b.desc != nullptr) op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b.desc);
    op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, *y.desc);
    add_operation(op, step);
  }
  void unary(const char* step, cudnnPointwiseMode_t mode, const Node& x, const Node& y) {
    pointwise(step, mode, x, Node{}, y);
  }

  // y = reduction of x over the dims where y has size 1.
  void reduction(const char* step, cudnnReduceTensorOp_t mode, const Node& x, const Node& y) {
    if (!ok()) return;
    Descriptor& red = graph_.parts.emplace_back(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
    red.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    red.set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (!finalize(red, step)) return;
    Descriptor& op = graph_.parts.emplace_back(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    op.set_descriptor(CUDNN_ATTR_OPERATION_REDUCTION_DESC, red);
    op.set_descriptor(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, *x.desc);
    op.set_descriptor(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, *y.desc);
    add_operation(op, step);
  }

  // c = a b over the last two dims, batched over the first two; fp32 accumulation.
  void matmul(const char* step, const Node& a, const Node& b, const Node& c) {
    if (!ok()) return;
    Descriptor& mm = graph_.parts.emplace_back(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
    mm.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (!finalize(mm, step)) return;
    Descriptor& op = graph_.parts.emplace_back(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    op.set_descriptor(CUDNN_ATTR_OPERATION_MATMUL_ADESC, *a.desc);
    op.set_descriptor(CUDNN_ATTR_OPERATION_MATMUL_BDESC, *b.desc);
    op.set_descriptor(CUDNN_ATTR_OPERATION_MATMUL_CDESC, *c.desc);
    op.set_descriptor(CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
    add_operation(op, step);
  }

  // y = x seen with other dims and strides (a transpose, for the backward's P^T, dS^T and K).
  void reshape(const char* step, const Node& x, const Node& y) {
    if (!ok()) return;
    Descriptor& op = graph_.parts.emplace_back(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    op.set_descriptor(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, *x.desc);
    op.set_descriptor(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, *y.desc);
    add_operation(op, step);
  }

  bool finish(cudnnHandle_t handle) {
    if (!ok()) return false;
    graph_.graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                     static_cast<int64_t>(operations_.size()), operations_.data());
    graph_.graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    return finalize(graph_.graph, "operation graph");
  }

 private:
  Node make_tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides, bool is_virtual,
                   bool by_value) {
    if (!ok()) return Node{nullptr, dims};
    Descriptor& t = graph_.parts.emplace_back(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;  // every operand row is 16-byte aligned (attention.cu copies when not)
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    if (is_virtual) t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    finalize(t, "tensor");
    return Node{&t, dims};
  }

  bool finalize(Descriptor& descriptor, const char* step) {
    if (descriptor.try_finalize()) return true;
    error_ = std::string(step) + " refused: " + cudnn_last_error();
    return false;
  }

  void add_operation(Descriptor& op, const char* step) {
    if (finalize(op, step)) operations_.push_back(op.get());
  }

  AttentionGraph& graph_;
  std::vector<cudnnBackendDescriptor_t> operations_;
  std::string error_;
  int64_t next_virtual_uid_ = 100;
};

// Element strides of a [B, H, L, X] operand with a contiguous last dim, and of its transpose [B, H, X, L].
Dims strides_of(const Strides3& s) { return {s.b, s.h, s.l, 1}; }
Dims transposed_strides_of(const Strides3& s) { return {s.b, s.h, 1, s.l}; }

}  // namespace

bool build_attention_forward_graph(const AttentionGraphShape& s, cudnnHandle_t handle, AttentionGraph& graph,
                                   std::string& error) {
  const cudnnDataType_t io = io_type(s.dtype), f32 = CUDNN_DATA_FLOAT;
  const int64_t b = s.batch, h = s.heads;
  const Dims scores{b, h, s.lq, s.lk}, rows{b, h, s.lq, 1};
  GraphBuilder g(graph);
  const Node q = g.tensor(kUidQ, io, {b, h, s.lq, s.d}, strides_of(s.q));
  const Node kt = g.tensor(kUidK, io, {b, h, s.d, s.lk}, transposed_strides_of(s.k));
  const Node v = g.tensor(kUidV, io, {b, h, s.lk, s.dv}, strides_of(s.v));
  const Node scale = g.scalar(kUidScale);
  const Node stats = g.tensor(kUidStats, f32, rows, packed(rows));
  const Node o = g.tensor(kUidO, io, {b, h, s.lq, s.dv}, packed({b, h, s.lq, s.dv}));

  const Node raw_scores = g.intermediate(f32, scores);
  g.matmul("Q K^T", q, kt, raw_scores);
  const Node scaled = g.intermediate(f32, scores);
  g.pointwise("scale", CUDNN_POINTWISE_MUL, raw_scores, scale, scaled);
  const Node row_max = g.intermediate(f32, rows);
  g.reduction("row max", CUDNN_REDUCE_TENSOR_MAX, scaled, row_max);
  const Node shifted = g.intermediate(f32, scores);
  g.pointwise("subtract max", CUDNN_POINTWISE_SUB, scaled, row_max, shifted);
  const Node exps = g.intermediate(f32, scores);
  g.unary("exp", CUDNN_POINTWISE_EXP, shifted, exps);
  const Node row_sum = g.intermediate(f32, rows);
  g.reduction("row sum", CUDNN_REDUCE_TENSOR_ADD, exps, row_sum);
  const Node log_sum = g.intermediate(f32, rows);
  g.unary("log", CUDNN_POINTWISE_LOG, row_sum, log_sum);
  g.pointwise("stats", CUDNN_POINTWISE_ADD, row_max, log_sum, stats);
  // The probabilities enter the second product in the I/O dtype, as FlashAttention-2 and our kernels round them.
  const Node probs = g.intermediate(io, scores);
  g.pointwise("normalize", CUDNN_POINTWISE_DIV, exps, row_sum, probs);
  g.matmul("P V", probs, v, o);
  graph.backward = false;
  const bool ok = g.finish(handle);
  error = g.error();
  return ok;
}

bool build_attention_backward_graph(const AttentionGraphShape& s, cudnnHandle_t handle, AttentionGraph& graph,
                                    std::string& error) {
  const cudnnDataType_t io = io_type(s.dtype), f32 = CUDNN_DATA_FLOAT;
  const int64_t b = s.batch, h = s.heads;
  const Dims scores{b, h, s.lq, s.lk}, scores_t{b, h, s.lk, s.lq}, rows{b, h, s.lq, 1};
  // [B, H, Lk, Lq] views of packed [B, H, Lq, Lk] scores.
  const Dims scores_t_strides{h * s.lq * s.lk, s.lq * s.lk, 1, s.lk};
  GraphBuilder g(graph);
  const Node q = g.tensor(kUidQ, io, {b, h, s.lq, s.d}, strides_of(s.q));
  const Node kt = g.tensor(kUidK, io, {b, h, s.d, s.lk}, transposed_strides_of(s.k));
  const Node vt = g.tensor(kUidV, io, {b, h, s.dv, s.lk}, transposed_strides_of(s.v));
  const Node o = g.tensor(kUidO, io, {b, h, s.lq, s.dv}, strides_of(s.o));
  const Node grad_o = g.tensor(kUidGradO, io, {b, h, s.lq, s.dv}, strides_of(s.grad_o));
  const Node stats = g.tensor(kUidStats, f32, rows, packed(rows));
  const Node scale = g.scalar(kUidScale);
  const Node one = g.scalar(kUidOne);
  const Node row_dot = g.tensor(kUidRowDot, f32, rows, packed(rows));  // fp32 scratch we provide
  const Node grad_q_accum = g.tensor(kUidGradQAccum, f32, {b, h, s.lq, s.d}, packed({b, h, s.lq, s.d}));
  const Node grad_q = g.tensor(kUidGradQ, io, {b, h, s.lq, s.d}, packed({b, h, s.lq, s.d}));
  const Node grad_k = g.tensor(kUidGradK, io, {b, h, s.lk, s.d}, packed({b, h, s.lk, s.d}));
  const Node grad_v = g.tensor(kUidGradV, io, {b, h, s.lk, s.dv}, packed({b, h, s.lk, s.dv}));

  // D_i = sum_c dO_ic O_ic (times 1: the dropout-free form of the pattern).
  const Node products = g.intermediate(f32, {b, h, s.lq, s.dv});
  g.pointwise("dO * O", CUDNN_POINTWISE_MUL, grad_o, o, products);
  const Node row_sum = g.intermediate(f32, rows);
  g.reduction("rowsum(dO * O)", CUDNN_REDUCE_TENSOR_ADD, products, row_sum);
  g.pointwise("rowsum * 1", CUDNN_POINTWISE_MUL, row_sum, one, row_dot);

  // P = exp(scale Q K^T - Stats), recomputed.
  const Node raw_scores = g.intermediate(f32, scores);
  g.matmul("Q K^T", q, kt, raw_scores);
  const Node scaled = g.intermediate(f32, scores);
  g.pointwise("scale", CUDNN_POINTWISE_MUL, raw_scores, scale, scaled);
  const Node shifted = g.intermediate(f32, scores);
  g.pointwise("subtract stats", CUDNN_POINTWISE_SUB, scaled, stats, shifted);
  const Node probs = g.intermediate(f32, scores);
  g.unary("exp", CUDNN_POINTWISE_EXP, shifted, probs);

  // dV = P^T dO.
  const Node probs_t = g.intermediate(io, scores_t, scores_t_strides);
  g.reshape("P^T", probs, probs_t);
  g.matmul("P^T dO", probs_t, grad_o, grad_v);

  // dS = P (dO V^T - D) scale.
  const Node grad_probs = g.intermediate(f32, scores);
  g.matmul("dO V^T", grad_o, vt, grad_probs);
  const Node centered = g.intermediate(f32, scores);
  g.pointwise("subtract D", CUDNN_POINTWISE_SUB, grad_probs, row_dot, centered);
  const Node weighted = g.intermediate(f32, scores);
  g.pointwise("times P", CUDNN_POINTWISE_MUL, centered, probs, weighted);
  const Node grad_scores = g.intermediate(f32, scores);
  g.pointwise("times scale", CUDNN_POINTWISE_MUL, weighted, scale, grad_scores);

  // dK = dS^T Q.
  const Node grad_scores_t = g.intermediate(io, scores_t, scores_t_strides);
  g.reshape("dS^T", grad_scores, grad_scores_t);
  g.matmul("dS^T Q", grad_scores_t, q, grad_k);

  // dQ = dS K, accumulated in fp32 scratch and converted to the I/O dtype.
  const Node k = g.intermediate(f32, {b, h, s.lk, s.d}, strides_of(s.k));
  g.reshape("K", kt, k);
  g.matmul("dS K", grad_scores, k, grad_q_accum);
  g.unary("dQ", CUDNN_POINTWISE_IDENTITY, grad_q_accum, grad_q);
  graph.backward = true;
  const bool ok = g.finish(handle);
  error = g.error();
  return ok;
}

}  // namespace dcae::ops::cuda::attention_detail
