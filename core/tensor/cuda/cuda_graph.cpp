#include "core/tensor/cuda/cuda_graph.h"

#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "core/tensor/cuda/caching_allocator.h"
#include "core/tensor/cuda/capture_state.h"
#include "core/tensor/cuda/check.h"
#include "core/tensor/error.h"

namespace dcae::cuda {

namespace {

uint64_t next_pool_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

// Ends the capture on `stream` after `work` threw or the capture broke; returns the runtime's verdict.
cudaError_t abandon_capture(cudaStream_t stream) {
  cudaGraph_t partial = nullptr;
  const cudaError_t status = cudaStreamEndCapture(stream, &partial);
  if (partial != nullptr) cudaGraphDestroy(partial);
  cudaGetLastError();  // capture errors are not sticky; clear them so later calls do not report them
  return status;
}

}  // namespace

CudaGraph::CudaGraph(int device)
    : device_(device < 0 ? current_device() : device),
      pool_(next_pool_id()),
      capture_stream_(Stream::create(device_)) {}

CudaGraph::~CudaGraph() {
  try {
    if (last_replay_.recorded()) last_replay_.synchronize();  // replays still queued use the pool's memory
  } catch (const std::exception&) {
  }
  if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) cudaGraphDestroy(graph_);
  caching_allocator(device_).release_pool(pool_);
}

void CudaGraph::capture(const std::function<void()>& work) {
  DCAE_CHECK(graph_ == nullptr, "CudaGraph::capture: this graph already holds a capture; make a new CudaGraph");
  DCAE_CHECK(!capture_underway(device_), "CudaGraph::capture: this thread is already capturing a graph on cuda:",
             device_, "; captures do not nest");
  DeviceGuard device_guard(device_);
  const Stream outer = current_stream(device_);
  {
    Event queued;  // the capture follows the work already queued on the caller's stream
    queued.record(outer);
    capture_stream_.wait(queued);
  }
  CachingAllocator& allocator = caching_allocator(device_);
  const cudaStream_t stream = capture_stream_.handle();
  {
    StreamGuard stream_guard(capture_stream_);
    allocator.begin_capture_pool(stream, pool_);
    DCAE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    detail::set_capture_underway(device_, true);
    try {
      work();
    } catch (const std::exception& e) {
      detail::set_capture_underway(device_, false);
      abandon_capture(stream);
      allocator.end_capture_pool(stream);
      DCAE_FAIL("while capturing a CUDA graph on cuda:", device_, ": ", e.what());
    }
    detail::set_capture_underway(device_, false);
    const cudaError_t status = cudaStreamEndCapture(stream, &graph_);
    allocator.end_capture_pool(stream);
    if (status != cudaSuccess) {
      cudaGetLastError();
      if (graph_ != nullptr) cudaGraphDestroy(graph_);
      graph_ = nullptr;
      DCAE_FAIL("capturing a CUDA graph on cuda:", device_, " failed at cudaStreamEndCapture: ",
                cudaGetErrorString(status), " (", cudaGetErrorName(status),
                "); an operation that cannot be captured ran during the capture, such as a synchronisation, a ",
                "legacy-default-stream call, or work on another stream that the capture stream never waited for");
    }
  }
  const cudaError_t status = cudaGraphInstantiate(&exec_, graph_, 0);
  if (status != cudaSuccess) {
    cudaGetLastError();
    exec_ = nullptr;
    cudaGraphDestroy(graph_);
    graph_ = nullptr;
    DCAE_FAIL("cudaGraphInstantiate of a captured CUDA graph on cuda:", device_, " failed: ",
              cudaGetErrorString(status), " (", cudaGetErrorName(status), ")");
  }
}

void CudaGraph::replay() {
  DCAE_CHECK(exec_ != nullptr, "CudaGraph::replay: nothing was captured (call capture first)");
  check_not_capturing(device_, "CudaGraph::replay");
  DeviceGuard device_guard(device_);
  const Stream stream = current_stream(device_);
  DCAE_CUDA_CHECK(cudaGraphLaunch(exec_, stream.handle()));
  last_replay_.record(stream);
}

int64_t CudaGraph::node_count() const {
  if (graph_ == nullptr) return 0;
  size_t count = 0;
  DCAE_CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &count));
  return static_cast<int64_t>(count);
}

size_t CudaGraph::pool_bytes() const { return caching_allocator(device_).pool_reserved_bytes(pool_); }

}  // namespace dcae::cuda
