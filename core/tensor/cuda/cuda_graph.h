// CUDA graphs: record once everything a piece of work launches on the GPU, then replay it with one launch.
//
// capture(work) runs `work` on a private capture stream while the runtime records its kernels, copies and memsets
// instead of running them (relaxed capture mode, so the caching allocator may still obtain memory from the driver).
// Memory allocated during the capture comes from a private pool of the caching allocator that lives as long as the
// graph: replay needs no allocation at all and reuses exactly the addresses the capture saw. Shapes, pointers and
// host-side scalars are frozen into the graph, so:
//   - inputs are static device tensors made before capture; refill them (copy_) before each replay;
//   - outputs are the tensors `work` produced; every replay overwrites them in place;
//   - run `work` eagerly once before capturing (warm-up), so algorithm choices, plan caches, cuDNN/cuBLASLt
//     workspaces sizes and lazily created handles exist before the capture starts.
// Host synchronisations and host<->GPU copies inside `work` fail with a dcae::Error naming the operation.
//
//   CudaGraph graph;
//   Tensor out;
//   graph.capture([&] { out = model.encode(static_input); });
//   static_input.copy_(next_batch); graph.replay();  // `out` holds the result once the stream gets there
#pragma once
#include <cstdint>
#include <functional>

#include "core/tensor/cuda/stream.h"

struct CUgraph_st;
struct CUgraphExec_st;

namespace dcae::cuda {

class CudaGraph {
 public:
  // A graph for `device` (default: the current device); capture() fills it.
  explicit CudaGraph(int device = -1);
  ~CudaGraph();  // waits for the last replay, then hands the pool back to the ordinary cache
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Records what `work` launches on the GPU (after the work already queued on the current stream). Nothing runs:
  // results appear at replay. An exception inside `work` ends the capture and is rethrown with context; the graph
  // stays empty.
  void capture(const std::function<void()>& work);
  // Runs the recorded work on the current stream of the device.
  void replay();

  bool captured() const { return exec_ != nullptr; }
  int device() const { return device_; }
  // Nodes (kernels, copies, memsets) in the captured graph.
  int64_t node_count() const;
  // The private allocator pool of this graph, and the bytes it holds.
  uint64_t pool() const { return pool_; }
  size_t pool_bytes() const;

 private:
  int device_;
  uint64_t pool_;
  Stream capture_stream_;
  Event last_replay_;
  CUgraph_st* graph_ = nullptr;
  CUgraphExec_st* exec_ = nullptr;
};

}  // namespace dcae::cuda
