#include "ops/cuda/cudnn_conv.h"

#include <cudnn_graph.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"
#include "ops/cuda/cudnn_conv_knobs.h"
#include "ops/cuda/cudnn_conv_plan.h"
#include "ops/cuda/math_mode.h"

namespace dcae::ops::cuda {

// What cudnn_conv_search.cpp shares (declared in cudnn_conv_plan.h); the rest stays local.
namespace cudnn_conv_detail {

// Unique ids of the three tensors in graphs and variant packs.
constexpr int64_t kUidX = 'x', kUidW = 'w', kUidY = 'y', kUidBias = 'b', kUidConvOut = 'v', kUidBiased = 'a';

cudnnDataType_t data_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDNN_DATA_FLOAT;
    case DType::f64: return CUDNN_DATA_DOUBLE;
    case DType::bf16: return CUDNN_DATA_BFLOAT16;
    case DType::f16: return CUDNN_DATA_HALF;
    default: break;
  }
  DCAE_FAIL("conv2d on CUDA supports f32, f64, bf16 and f16, got ", dtype);
}

// A 4-D tensor in cuDNN's logical order (N, C, H, W) with NHWC strides: [n, c, h, w] at n*H*W*C + (h*W + w)*C + c.
// A virtual tensor is an intermediate of a fused graph that never reaches memory.
Descriptor make_tensor(int64_t uid, cudnnDataType_t type, int64_t n, int64_t c, int64_t h, int64_t w,
                       int64_t alignment, bool is_virtual = false) {
  Descriptor t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t dims[4] = {n, c, h, w};
  const int64_t strides[4] = {h * w * c, 1, w * c, c};
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  if (is_virtual) t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
  t.finalize();
  return t;
}

// The attribute names of one convolution direction: the operation descriptor and its x, w, y, conv, alpha, beta.
struct OperationNames {
  cudnnBackendDescriptorType_t type;
  cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
};

OperationNames names_for(ConvDirection direction) {
  switch (direction) {
    case ConvDirection::forward:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA};
    case ConvDirection::backward_data:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA};
    case ConvDirection::backward_filter:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA};
  }
  DCAE_FAIL("unknown convolution direction");
}

Descriptor make_convolution(const ConvGeometry& g, DType dtype) {
  Descriptor conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t compute = dtype == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  const int64_t spatial_dims = 2;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t dilations[2] = {1, 1}, strides[2] = {g.stride, g.stride}, paddings[2] = {g.pad, g.pad};
  conv.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial_dims);
  conv.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  conv.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  conv.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilations);
  conv.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, strides);
  conv.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, paddings);
  conv.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, paddings);
  conv.finalize();
  return conv;
}


// A pointwise operation of the graph: y = mode(x) or y = mode(x, b), computed in `compute` precision.
Descriptor pointwise_operation(cudnnPointwiseMode_t mode, cudnnDataType_t compute, const Descriptor& x,
                               const Descriptor* b, const Descriptor& y, std::vector<Descriptor>& parts) {
  Descriptor& pw = parts.emplace_back(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
  pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  pw.finalize();
  Descriptor op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
  op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
  if (b != nullptr) op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b);
  op.set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
  return op;
}

// The convolution (one direction) alone or, with `fused_bias`, forward followed by + bias[Cout] (and, with
// `activation`, relu or silu) in one graph. Null when cuDNN rejects the graph.
std::shared_ptr<Graph> build_graph(ConvDirection direction, const ConvGeometry& g, DType dtype,
                                   const ConvAlignment& alignment, cudnnHandle_t handle, bool fused_bias,
                                   ConvEpilogue epilogue) {
  const cudnnDataType_t type = data_type(dtype);
  const cudnnDataType_t compute = dtype == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  auto graph = std::make_shared<Graph>();
  std::vector<Descriptor>& parts = graph->parts;
  parts.reserve(20);  // up front: the references taken below must stay valid
  const Descriptor& x = parts.emplace_back(make_tensor(kUidX, type, g.n, g.cin, g.h, g.w, alignment.x));
  const Descriptor& w = parts.emplace_back(make_tensor(kUidW, type, g.cout, g.cin_g(), g.kh, g.kw, alignment.w));
  // Fused, the convolution's result is a virtual fp32 intermediate and y the sum's output.
  const Descriptor& conv_out =
      fused_bias ? parts.emplace_back(make_tensor(kUidConvOut, compute, g.n, g.cout, g.ho, g.wo, 16, true))
                 : parts.emplace_back(make_tensor(kUidY, type, g.n, g.cout, g.ho, g.wo, alignment.y));
  const Descriptor& conv = parts.emplace_back(make_convolution(g, dtype));

  const OperationNames names = names_for(direction);
  Descriptor& operation = parts.emplace_back(names.type);
  operation.set_descriptor(names.x, x);
  operation.set_descriptor(names.w, w);
  operation.set_descriptor(names.y, conv_out);
  operation.set_descriptor(names.conv, conv);
  // alpha = 1, beta = 0 (the output is overwritten, never read): double for f64 graphs, float otherwise.
  if (dtype == DType::f64) {
    const double alpha = 1.0, beta = 0.0;
    operation.set(names.alpha, CUDNN_TYPE_DOUBLE, 1, &alpha);
    operation.set(names.beta, CUDNN_TYPE_DOUBLE, 1, &beta);
  } else {
    const float alpha = 1.0f, beta = 0.0f;
    operation.set(names.alpha, CUDNN_TYPE_FLOAT, 1, &alpha);
    operation.set(names.beta, CUDNN_TYPE_FLOAT, 1, &beta);
  }
  if (!operation.try_finalize()) return nullptr;
  std::vector<cudnnBackendDescriptor_t> ops = {operation.get()};
  graph->uids = {kUidX, kUidW, kUidY};

  if (fused_bias) {
    // y = conv_out + bias, the bias a [1, Cout, 1, 1] tensor broadcast over N, H and W.
    Descriptor bias(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t dims[4] = {1, g.cout, 1, 1}, strides[4] = {g.cout, 1, g.cout, g.cout};
    bias.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    bias.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
    bias.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
    bias.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &kUidBias);
    bias.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment.bias);
    bias.finalize();
    const Descriptor& y = parts.emplace_back(make_tensor(kUidY, type, g.n, g.cout, g.ho, g.wo, alignment.y));
    // With an activation, the sum is another virtual fp32 intermediate and y the activation's output.
    const bool activation = epilogue != ConvEpilogue::bias;
    const Descriptor& biased =
        activation ? parts.emplace_back(make_tensor(kUidBiased, compute, g.n, g.cout, g.ho, g.wo, 16, true)) : y;
    Descriptor& add_op =
        parts.emplace_back(pointwise_operation(CUDNN_POINTWISE_ADD, compute, conv_out, &bias, biased, parts));
    if (!add_op.try_finalize()) return nullptr;
    ops.push_back(add_op.get());
    if (activation) {
      const cudnnPointwiseMode_t mode =
          epilogue == ConvEpilogue::bias_relu ? CUDNN_POINTWISE_RELU_FWD : CUDNN_POINTWISE_SWISH_FWD;
      Descriptor& act_op = parts.emplace_back(pointwise_operation(mode, compute, biased, nullptr, y, parts));
      if (!act_op.try_finalize()) return nullptr;
      ops.push_back(act_op.get());
    }
    parts.push_back(std::move(bias));
    graph->uids.push_back(kUidBias);
  }

  graph->graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
                   ops.data());
  graph->graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  if (!graph->graph.try_finalize()) return nullptr;
  return graph;
}

// An integer setting from the environment, read each time (plans are built once per problem).
int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::atoi(value) : fallback;
}

bool reduced_reduction_allowed() {
  static const bool allowed = [] {
    const char* value = std::getenv("DCAE_CUDNN_REDUCED_REDUCTION");
    return value != nullptr && std::string(value) == "1";
  }();
  return allowed;
}

// Whether an engine's numerics are acceptable for `dtype`; also its global index and whether its kernels are
// compiled at run time (finalizing such a plan can take a second).
bool acceptable_engine(const Descriptor& config, DType dtype, bool tf32, int64_t& engine_id, bool& runtime_compiled) {
  const cudnn::EngineInfo engine = cudnn::describe_engine(config);
  engine_id = engine.id;
  runtime_compiled = engine.runtime_compiled;
  if (!engine.known) return false;
  const bool full_precision = dtype == DType::f32 || dtype == DType::f64;
  for (const cudnnBackendNumericalNote_t note : engine.numerical_notes) {
    switch (note) {
      case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS:
      case CUDNN_NUMERICAL_NOTE_FFT:
        return false;
      case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION:
        // PyTorch accepts these for bf16/f16; we do only when asked (DCAE_CUDNN_REDUCED_REDUCTION=1), since a
        // reduction below fp32 breaks the rule that sums accumulate in at least fp32.
        if (full_precision || !reduced_reduction_allowed()) return false;
        break;
      case CUDNN_NUMERICAL_NOTE_TENSOR_CORE:  // on f32 data that is TF32
        if (dtype == DType::f32 && !tf32) return false;
        break;
      case CUDNN_NUMERICAL_NOTE_WINOGRAD:
      case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4:
      case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6:
      case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13:
        if (full_precision) return false;  // transform error is well above f32 rounding
        break;
      default: break;
    }
  }
  return true;
}

// A finalized plan's JSON description (engine and knob choices), to recognise one configuration proposed twice;
// empty where cuDNN does not give it.
std::string plan_json(const Descriptor& plan) {
  std::vector<char> text(1 << 16, '\0');
  int64_t length = 0;
  if (cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                               static_cast<int64_t>(text.size()) - 1, &length, text.data()) != CUDNN_STATUS_SUCCESS)
    return {};
  return std::string(text.data());
}

}  // namespace cudnn_conv_detail

namespace {

using namespace cudnn_conv_detail;


std::vector<std::shared_ptr<const CudnnConvPlan>> plans_for(ConvDirection direction, const ConvGeometry& g,
                                                            DType dtype, const ConvAlignment& alignment, int device,
                                                            int max_plans, bool fused_bias,
                                                            ConvEpilogue epilogue = ConvEpilogue::bias) {
  ::dcae::cuda::DeviceGuard guard(device);
  const cudnnHandle_t handle = handle_for(device);
  std::vector<std::shared_ptr<const CudnnConvPlan>> plans;
  const std::shared_ptr<Graph> graph = build_graph(direction, g, dtype, alignment, handle, fused_bias, epilogue);
  if (!graph) return plans;
  const bool tf32 = allow_tf32();
  // Mode A (a decision tree) ranks the engine configurations cuDNN expects to be fastest; mode B (a neural net,
  // costlier on the host) and the instant mode often propose others - other engines, or the same engine with
  // other knobs - so when more than one plan is wanted (to be timed) the lists are merged, A first, duplicates
  // (the same plan JSON) dropped. The fallback mode lists engines that support nearly every problem, for when
  // none has anything usable. Runtime-compiled engines cost a compilation each: a few per problem at most.
  const int max_runtime_compiled = env_int("DCAE_CUDNN_MAX_RUNTIME_COMPILED", 1);
  int runtime_compiled_plans = 0;
  std::set<std::string> seen;
  const auto add_plan = [&](Descriptor config, int limit, std::vector<Descriptor> parts = {}) {
    if (static_cast<int>(plans.size()) >= limit) return false;
    int64_t engine = -1;
    bool runtime_compiled = false;
    if (!acceptable_engine(config, dtype, tf32, engine, runtime_compiled)) return false;
    if (runtime_compiled && runtime_compiled_plans >= max_runtime_compiled) return false;
    Descriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    plan.set_descriptor(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config);
    if (!plan.try_finalize()) return false;  // this engine cannot run this problem after all
    const std::string json = plan_json(plan);
    if (!json.empty() && !seen.insert(json).second) return false;
    int64_t workspace = 0, returned = 0;
    DCAE_CUDNN_CHECK(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                              1, &returned, &workspace));
    runtime_compiled_plans += runtime_compiled;
    plans.push_back(std::make_shared<Plan>(graph, std::move(config), std::move(plan), workspace, engine,
                                           std::move(parts), json));
    return true;
  };
  const auto add_mode = [&](cudnnBackendHeurMode_t mode) {
    for (Descriptor& config : engine_configs(graph->graph, mode)) add_plan(std::move(config), max_plans);
  };
  add_mode(CUDNN_HEUR_MODE_A);
  if (max_plans > 1) {
    add_mode(CUDNN_HEUR_MODE_B);
    add_mode(CUDNN_HEUR_MODE_INSTANT);
  }
  if (plans.empty()) add_mode(CUDNN_HEUR_MODE_FALLBACK);
  // DCAE_CUDNN_KNOB_SEARCH=1: also the knob variants of the heuristic's first two answers (timed like the rest).
  if (max_plans > 1 && env_int("DCAE_CUDNN_KNOB_SEARCH", 0) > 0) {
    constexpr int kKnobVariants = 24;
    std::vector<Descriptor> first = engine_configs(graph->graph, CUDNN_HEUR_MODE_A);
    const int64_t base_count = std::min<int64_t>(2, static_cast<int64_t>(first.size()));
    const int limit = static_cast<int>(plans.size()) + kKnobVariants;
    for (int64_t i = 0; i < base_count; ++i)
      for (KnobVariant& variant : knob_variants(graph->graph, first[i], kKnobVariants / 2))
        add_plan(std::move(variant.config), limit, std::move(variant.parts));
  }
  return plans;
}

}  // namespace

std::vector<std::shared_ptr<const CudnnConvPlan>> cudnn_conv_plans(ConvDirection direction, const ConvGeometry& g,
                                                                   DType dtype, const ConvAlignment& alignment,
                                                                   int device, int max_plans) {
  return plans_for(direction, g, dtype, alignment, device, max_plans, false);
}

std::vector<std::shared_ptr<const CudnnConvPlan>> cudnn_conv_bias_plans(const ConvGeometry& g, DType dtype,
                                                                        const ConvAlignment& alignment, int device,
                                                                        int max_plans, ConvEpilogue epilogue) {
  // Fusion support varies between cuDNN versions and problems: any rejection simply means no fused plan.
  try {
    return plans_for(ConvDirection::forward, g, dtype, alignment, device, max_plans, true, epilogue);
  } catch (const Error&) {
    return {};
  }
}

}  // namespace dcae::ops::cuda
