// Configurations beyond the heuristic's list: the one-knob neighbours of a plan (the conv autotuner's knob search)
// and the sweep over every engine and knob variant cuDNN has for a problem (bench/cuda_conv_sweep_bench.cpp).
#include <chrono>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"
#include "ops/cuda/cudnn_conv.h"
#include "ops/cuda/cudnn_conv_knobs.h"
#include "ops/cuda/cudnn_conv_plan.h"
#include "ops/cuda/math_mode.h"

namespace dcae::ops::cuda {

using namespace cudnn_conv_detail;

std::vector<std::shared_ptr<const CudnnConvPlan>> cudnn_conv_knob_neighbours(const CudnnConvPlan& plan, DType dtype,
                                                                             int device, int max_plans) {
  std::vector<std::shared_ptr<const CudnnConvPlan>> neighbours;
  const auto* base = dynamic_cast<const Plan*>(&plan);
  if (base == nullptr || max_plans <= 0) return neighbours;
  ::dcae::cuda::DeviceGuard guard(device);
  const cudnnHandle_t handle = handle_for(device);
  const bool tf32 = allow_tf32();
  for (KnobVariant& variant : knob_variants(base->graph()->graph, base->config(), max_plans)) {
    int64_t engine = -1;
    bool runtime_compiled = false;
    if (!acceptable_engine(variant.config, dtype, tf32, engine, runtime_compiled) || runtime_compiled) continue;
    Descriptor finalized(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    finalized.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    finalized.set_descriptor(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, variant.config);
    if (!finalized.try_finalize()) continue;
    std::string json = plan_json(finalized);
    if (!json.empty() && json == base->description()) continue;
    int64_t workspace = 0, returned = 0;
    DCAE_CUDNN_CHECK(cudnnBackendGetAttribute(finalized.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                              CUDNN_TYPE_INT64, 1, &returned, &workspace));
    neighbours.push_back(std::make_shared<Plan>(base->graph(), std::move(variant.config), std::move(finalized),
                                                workspace, engine, std::move(variant.parts), std::move(json)));
  }
  return neighbours;
}

std::vector<CudnnSweptPlan> cudnn_conv_engine_sweep(ConvDirection direction, const ConvGeometry& g, DType dtype,
                                                    const ConvAlignment& alignment, int device, bool every_engine,
                                                    int knob_variants_per_engine, double compile_seconds) {
  ::dcae::cuda::DeviceGuard guard(device);
  const cudnnHandle_t handle = handle_for(device);
  std::vector<CudnnSweptPlan> swept;
  const std::shared_ptr<Graph> graph = build_graph(direction, g, dtype, alignment, handle, false);
  if (!graph) return swept;
  const bool tf32 = allow_tf32();
  std::set<std::string> seen;
  double compile_left = compile_seconds;
  const auto add = [&](Descriptor config, std::vector<Descriptor> parts) {
    int64_t engine = -1;
    bool runtime_compiled = false;
    const bool accepted = acceptable_engine(config, dtype, tf32, engine, runtime_compiled);
    if (runtime_compiled && compile_left <= 0) return;
    const auto start = std::chrono::steady_clock::now();
    Descriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    plan.set_descriptor(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config);
    const bool finalized = plan.try_finalize();
    if (runtime_compiled)
      compile_left -= std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!finalized) return;
    std::string json = plan_json(plan);
    if (json.empty()) json = "{\"engineId\":" + std::to_string(engine) + "}";
    if (!seen.insert(json).second) return;
    int64_t workspace = 0, returned = 0;
    DCAE_CUDNN_CHECK(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                              1, &returned, &workspace));
    swept.push_back({std::make_shared<Plan>(graph, std::move(config), std::move(plan), workspace, engine,
                                            std::move(parts), json),
                     json, accepted, runtime_compiled});
  };
  for (const cudnnBackendHeurMode_t mode :
       {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_B, CUDNN_HEUR_MODE_INSTANT, CUDNN_HEUR_MODE_FALLBACK}) {
    std::vector<Descriptor> configs = engine_configs(graph->graph, mode);
    for (size_t i = 0; i < configs.size(); ++i) {
      // Knob variants of the first answers too: they start from the heuristic's own knob settings.
      if (i < 4 && knob_variants_per_engine > 0)
        for (KnobVariant& variant : knob_variants(graph->graph, configs[i], knob_variants_per_engine))
          add(std::move(variant.config), std::move(variant.parts));
      add(std::move(configs[i]), {});
    }
  }
  const int64_t count = every_engine ? engine_count(graph->graph) : 0;
  for (int64_t engine = 0; engine < count; ++engine)
    for (KnobVariant& base : default_engine_config(graph->graph, engine)) {
      if (knob_variants_per_engine > 0)
        for (KnobVariant& variant : knob_variants(graph->graph, base.config, knob_variants_per_engine))
        add(std::move(variant.config), std::move(variant.parts));
      add(std::move(base.config), std::move(base.parts));
    }
  return swept;
}

}  // namespace dcae::ops::cuda
