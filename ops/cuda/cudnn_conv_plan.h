// Internals shared by cudnn_conv.cpp (plans from cuDNN's heuristics) and cudnn_conv_search.cpp (knob neighbours
// of a plan, the engine sweep): the operation graph, the plan class and the helpers both use.
#pragma once
#include <cudnn_graph.h>

#include <memory>
#include <string>
#include <vector>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"
#include "ops/cuda/cudnn_conv.h"
#include "ops/cuda/cudnn_descriptor.h"

namespace dcae::ops::cuda::cudnn_conv_detail {

using cudnn::Descriptor;
using cudnn::engine_configs;
using cudnn::handle_for;

// An operation graph, with every descriptor it refers to kept alive as long as plans built from it, and the
// unique ids of its memory tensors in the order run() passes pointers: x, w, y (and the bias when fused).
struct Graph {
  std::vector<Descriptor> parts;
  Descriptor graph{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR};
  std::vector<int64_t> uids;
};

// The convolution (one direction) alone or, with `fused_bias`, forward followed by + bias[Cout] (and, with
// `activation`, relu or silu) in one graph. Null when cuDNN rejects the graph.
std::shared_ptr<Graph> build_graph(ConvDirection direction, const ConvGeometry& g, DType dtype,
                                   const ConvAlignment& alignment, cudnnHandle_t handle, bool fused_bias,
                                   ConvEpilogue epilogue = ConvEpilogue::bias);

// Whether an engine's numerics are acceptable for `dtype`; also its global index and whether its kernels are
// compiled at run time.
bool acceptable_engine(const Descriptor& config, DType dtype, bool tf32, int64_t& engine_id, bool& runtime_compiled);

// A finalized plan's JSON description (engine and knob choices); empty where cuDNN does not give it.
std::string plan_json(const Descriptor& plan);

class Plan final : public CudnnConvPlan {
 public:
  Plan(std::shared_ptr<Graph> graph, Descriptor config, Descriptor plan, int64_t workspace, int64_t engine,
       std::vector<Descriptor> config_parts = {}, std::string description = {})
      : graph_(std::move(graph)), config_parts_(std::move(config_parts)), config_(std::move(config)),
        plan_(std::move(plan)), workspace_(workspace), engine_(engine),
        description_(description.empty() ? "engine " + std::to_string(engine) : std::move(description)) {}
  size_t workspace_bytes() const override { return static_cast<size_t>(workspace_); }
  int64_t engine_id() const override { return engine_; }
  const std::string& description() const override { return description_; }
  const std::shared_ptr<Graph>& graph() const { return graph_; }
  const Descriptor& config() const { return config_; }

  void run(int device, void* x, void* w, void* y, void* workspace, const void* bias) const override {
    const cudnnHandle_t handle = handle_for(device);  // the thread's handle, which the plan was built with
    DCAE_CUDNN_CHECK(cudnnSetStream(handle, ::dcae::cuda::current_stream(device).handle()));
    const int64_t count = static_cast<int64_t>(graph_->uids.size());
    DCAE_CHECK((count == 4) == (bias != nullptr), "cuDNN convolution plan run ", (count == 4 ? "without" : "with"),
               " a bias it was ", (count == 4 ? "" : "not "), "built for");
    Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    void* pointers[4] = {x, w, y, const_cast<void*>(bias)};
    pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, count, pointers);
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, count, graph_->uids.data());
    pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    pack.finalize();
    DCAE_CUDNN_CHECK(cudnnBackendExecute(handle, plan_.get(), pack.get()));
  }

 private:
  std::shared_ptr<Graph> graph_;
  std::vector<Descriptor> config_parts_;  // what a knob variant's configuration was made of (destroyed last)
  Descriptor config_;
  Descriptor plan_;
  int64_t workspace_;
  int64_t engine_;
  std::string description_;
};

}  // namespace dcae::ops::cuda::cudnn_conv_detail
