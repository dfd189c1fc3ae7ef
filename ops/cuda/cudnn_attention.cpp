#include "ops/cuda/cudnn_attention.h"

#include <cuda_runtime_api.h>

#include <chrono>
#include <memory>
#include <unordered_map>
#include <utility>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"
#include "core/tensor/tensor.h"
#include "ops/cuda/cudnn_attention_graph.h"
#include "ops/cuda/plan_key.h"

namespace dcae::ops::cuda::attention_detail {

namespace {

using cudnn::engine_configs;
using cudnn::handle_for;

AttentionGraphShape graph_shape(const AttentionParams& p, DType dtype, bool backward) {
  AttentionGraphShape s;
  s.batch = p.batch;
  s.heads = p.heads;
  s.lq = p.lq;
  s.lk = p.lk;
  s.d = p.d;
  s.dv = p.dv_dim;
  s.q = p.q_strides;
  s.k = p.k_strides;
  s.v = p.v_strides;
  if (backward) {
    s.o = p.o_strides;
    s.grad_o = p.grad_strides;
  }
  s.dtype = dtype;
  return s;
}

// A limitation of cuDNN itself rather than of the graph: cudnn-frontend works around wrong backward results for
// key counts that are not a multiple of 128 before cuDNN 9.16 with a padding mask; we let our kernels take them.
std::string known_limitation(const AttentionParams& p, bool backward) {
  if (backward && p.lk % 128 != 0 && cudnn_runtime_version() < 91600)
    return "cuDNN " + std::to_string(cudnn_runtime_version()) + " < 9.16 needs a padding mask for " +
           std::to_string(p.lk) + " keys (not a multiple of 128) in the backward";
  return {};
}

// The engine behind a configuration: its global index and whether its kernels are compiled at run time.
void describe_engine(const Descriptor& config, int64_t& engine_id, bool& runtime_compiled) {
  const cudnn::EngineInfo engine = cudnn::describe_engine(config);
  engine_id = engine.id;
  runtime_compiled = engine.runtime_compiled;
}

// A finalized plan with the graph it came from.
struct Plan {
  std::shared_ptr<AttentionGraph> graph;
  Descriptor config{CUDNN_BACKEND_ENGINECFG_DESCRIPTOR};
  Descriptor plan{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR};
  int64_t workspace = 0;
  int64_t engine_id = -1;
};

// Tries to finalize `config` into a plan; null (with `error`) when the engine cannot run the problem after all.
std::shared_ptr<Plan> finalize_plan(const std::shared_ptr<AttentionGraph>& graph, Descriptor config,
                                    cudnnHandle_t handle, std::string& error) {
  auto plan = std::make_shared<Plan>();
  plan->graph = graph;
  bool runtime_compiled = false;
  describe_engine(config, plan->engine_id, runtime_compiled);
  plan->config = std::move(config);
  plan->plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  plan->plan.set_descriptor(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, plan->config);
  if (!plan->plan.try_finalize()) {
    error = cudnn_last_error();
    return nullptr;
  }
  int64_t returned = 0;
  DCAE_CUDNN_CHECK(cudnnBackendGetAttribute(plan->plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                      CUDNN_TYPE_INT64, 1, &returned, &plan->workspace));
  return plan;
}

std::shared_ptr<AttentionGraph> build_graph(const AttentionParams& p, DType dtype, bool backward,
                                            cudnnHandle_t handle, std::string& error) {
  auto graph = std::make_shared<AttentionGraph>();
  const AttentionGraphShape shape = graph_shape(p, dtype, backward);
  const bool ok = backward ? build_attention_backward_graph(shape, handle, *graph, error)
                           : build_attention_forward_graph(shape, handle, *graph, error);
  return ok ? graph : nullptr;
}

// The first configuration that finalizes, in the heuristics' order (mode A, then the fallback list), engines with
// precompiled kernels before those compiled at run time (a compilation can take seconds per problem); null when
// there is none.
std::shared_ptr<const Plan> make_plan(const AttentionParams& p, DType dtype, bool backward, int device) {
  if (!known_limitation(p, backward).empty()) return nullptr;
  ::dcae::cuda::DeviceGuard guard(device);
  const cudnnHandle_t handle = handle_for(device);
  std::string error;
  const std::shared_ptr<AttentionGraph> graph = build_graph(p, dtype, backward, handle, error);
  if (!graph) return nullptr;
  std::vector<Descriptor> precompiled, runtime_compiled;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK})
    for (Descriptor& config : engine_configs(graph->graph, mode)) {
      int64_t engine_id = -1;
      bool compiled_at_run_time = false;
      describe_engine(config, engine_id, compiled_at_run_time);
      (compiled_at_run_time ? runtime_compiled : precompiled).push_back(std::move(config));
    }
  for (std::vector<Descriptor>* configs : {&precompiled, &runtime_compiled})
    for (Descriptor& config : *configs)
      if (auto plan = finalize_plan(graph, std::move(config), handle, error)) return plan;
  return nullptr;
}

using Key = PlanKey<24>;
using KeyHash = PlanKeyHash<24>;

Key key_for(const AttentionParams& p, DType dtype, bool backward, int device) {
  const Strides3 o = backward ? p.o_strides : Strides3{}, g = backward ? p.grad_strides : Strides3{};
  return Key{{backward, static_cast<int64_t>(dtype), p.batch, p.heads, p.lq, p.lk, p.d, p.dv_dim, p.q_strides.b,
              p.q_strides.h, p.q_strides.l, p.k_strides.b, p.k_strides.h, p.k_strides.l, p.v_strides.b,
              p.v_strides.h, p.v_strides.l, o.b, o.h, o.l, g.b, g.h, g.l, device}};
}

// The cached plan of a problem, made on first use; null when cuDNN has none.
std::shared_ptr<const Plan> plan_for(const AttentionParams& p, DType dtype, bool backward, int device) {
  thread_local std::unordered_map<Key, std::shared_ptr<const Plan>, KeyHash> cache;
  const Key key = key_for(p, dtype, backward, device);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  std::shared_ptr<const Plan> plan = make_plan(p, dtype, backward, device);
  cache.emplace(key, plan);
  return plan;
}

thread_local int64_t t_last_engine = -1;

// Runs `plan` on the current stream with the given (uid, pointer) pairs and a workspace from our allocator.
void execute(const Plan& plan, int device, const std::vector<std::pair<int64_t, void*>>& bindings) {
  const cudnnHandle_t handle = handle_for(device);
  DCAE_CUDNN_CHECK(cudnnSetStream(handle, ::dcae::cuda::current_stream(device).handle()));
  Tensor workspace;
  if (plan.workspace > 0) workspace = empty({plan.workspace}, DType::u8, Device::cuda(device));
  void* workspace_ptr = workspace.defined() ? workspace.raw_data() : nullptr;
  std::vector<int64_t> uids;
  std::vector<void*> pointers;
  for (const auto& [uid, pointer] : bindings) {
    uids.push_back(uid);
    pointers.push_back(pointer);
  }
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(pointers.size()),
           pointers.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()), uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace_ptr);
  DCAE_CHECK(pack.try_finalize(), "cuDNN attention variant pack refused: ", cudnn_last_error());
  DCAE_CUDNN_CHECK(cudnnBackendExecute(handle, plan.plan.get(), pack.get()));
  t_last_engine = plan.engine_id;
}

}  // namespace

int64_t cudnn_runtime_version() { return static_cast<int64_t>(cudnnGetVersion()); }

int64_t cudnn_attention_last_engine() { return t_last_engine; }

bool cudnn_attention_expressible(const AttentionParams& p, DType dtype) {
  return (dtype == DType::bf16 || dtype == DType::f16) && p.mask == nullptr && p.dscores == nullptr &&
         p.d % 8 == 0 && p.dv_dim % 8 == 0 && p.batch > 0 && p.heads > 0 && p.lq > 0 && p.lk > 0 && p.d > 0 &&
         p.dv_dim > 0;
}

bool cudnn_attention_forward(const AttentionParams& p, DType dtype, int device) {
  if (!cudnn_attention_expressible(p, dtype)) return false;
  const std::shared_ptr<const Plan> plan = plan_for(p, dtype, false, device);
  if (!plan) return false;
  float scale = static_cast<float>(p.scale);  // passed by value: cuDNN reads it at execution
  execute(*plan, device,
          {{kUidQ, const_cast<void*>(p.q)}, {kUidK, const_cast<void*>(p.k)}, {kUidV, const_cast<void*>(p.v)},
           {kUidScale, &scale}, {kUidStats, p.lse}, {kUidO, p.out}});
  return true;
}

bool cudnn_attention_backward(const AttentionParams& p, DType dtype, int device) {
  if (!cudnn_attention_expressible(p, dtype)) return false;
  const std::shared_ptr<const Plan> plan = plan_for(p, dtype, true, device);
  if (!plan) return false;
  const Device on = Device::cuda(device);
  // fp32 scratch the graph names: D = rowsum(dO O) and the dQ accumulator (cuDNN zeroes it itself from 9.6).
  Tensor row_dot = empty({p.batch * p.heads * p.lq}, DType::f32, on);
  Tensor grad_q_accum = empty({p.batch * p.heads * p.lq * p.d}, DType::f32, on);
  if (cudnn_runtime_version() < 90600)
    DCAE_CUDA_CHECK(cudaMemsetAsync(grad_q_accum.raw_data(), 0, grad_q_accum.numel() * sizeof(float),
                                    ::dcae::cuda::current_stream(device).handle()));
  float scale = static_cast<float>(p.scale), one = 1.0f;
  execute(*plan, device,
          {{kUidQ, const_cast<void*>(p.q)},
           {kUidK, const_cast<void*>(p.k)},
           {kUidV, const_cast<void*>(p.v)},
           {kUidO, const_cast<void*>(p.o)},
           {kUidGradO, const_cast<void*>(p.grad)},
           {kUidStats, p.lse},
           {kUidScale, &scale},
           {kUidOne, &one},
           {kUidRowDot, row_dot.raw_data()},
           {kUidGradQAccum, grad_q_accum.raw_data()},
           {kUidGradQ, p.dq},
           {kUidGradK, p.dk},
           {kUidGradV, p.dv}});
  return true;
}

CudnnAttentionReport cudnn_attention_report(const AttentionParams& p, DType dtype, int device, bool backward) {
  CudnnAttentionReport report;
  if (!cudnn_attention_expressible(p, dtype)) {
    report.refusal = "not expressible (needs bf16/f16, no mask, D and Dv multiples of 8)";
    return report;
  }
  report.refusal = known_limitation(p, backward);
  if (!report.refusal.empty()) return report;
  ::dcae::cuda::DeviceGuard guard(device);
  const cudnnHandle_t handle = handle_for(device);
  const auto start = std::chrono::steady_clock::now();
  std::string error;
  const std::shared_ptr<AttentionGraph> graph = build_graph(p, dtype, backward, handle, error);
  if (!graph) {
    report.refusal = "graph: " + error;
    return report;
  }
  int compiled = 0;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    for (Descriptor& config : engine_configs(graph->graph, mode)) {
      CudnnAttentionEngine engine;
      engine.heuristic = mode == CUDNN_HEUR_MODE_A ? "A" : "fallback";
      describe_engine(config, engine.engine_id, engine.runtime_compiled);
      // One run-time compilation is enough to learn whether such engines work; each can take seconds.
      if (engine.runtime_compiled && compiled++ > 0) {
        engine.error = "(runtime compiled, not tried)";
      } else if (auto plan = finalize_plan(graph, std::move(config), handle, engine.error)) {
        engine.finalized = true;
        engine.workspace_bytes = plan->workspace;
      }
      report.engines.push_back(engine);
    }
  }
  report.build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace dcae::ops::cuda::attention_detail
