// Pieces of cuDNN 9's backend API shared by the convolution (ops/cuda/cudnn_conv*.cpp) and fused-attention
// (ops/cuda/cudnn_attention*.cpp) files: a checked call, cuDNN's last error message, an owned backend descriptor,
// the thread's handle, the heuristics' engine configurations and what an engine is (cudnn_descriptor.cpp).
#pragma once
#include <cudnn_graph.h>

#include <string>
#include <utility>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::ops::cuda::cudnn {

// cuDNN's most recent error message on this thread ("" when none).
inline std::string cudnn_last_error() {
  char detail[1024] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));
  return detail;
}

// Throws dcae::Error naming `call` and cuDNN's last error message unless `status` is success.
inline void check_cudnn(cudnnStatus_t status, const char* call) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  const std::string detail = cudnn_last_error();
  DCAE_FAIL(call, " failed: ", cudnnGetErrorString(status), detail.empty() ? "" : ": " + detail);
}
#define DCAE_CUDNN_CHECK(call) ::dcae::ops::cuda::cudnn::check_cudnn((call), #call)

// An owned backend descriptor.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptorType_t type) {
    DCAE_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &raw_));
  }
  ~Descriptor() {
    if (raw_ != nullptr) cudnnBackendDestroyDescriptor(raw_);
  }
  Descriptor(Descriptor&& other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
  Descriptor& operator=(Descriptor&& other) noexcept {
    std::swap(raw_, other.raw_);
    return *this;
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return raw_; }
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values) {
    DCAE_CUDNN_CHECK(cudnnBackendSetAttribute(raw_, name, type, count, values));
  }
  void set_descriptor(cudnnBackendAttributeName_t name, const Descriptor& value) {
    cudnnBackendDescriptor_t raw = value.get();
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
  }
  // Unsupported configurations fail to finalize (cudnn_last_error() says why); that is an answer, not an error.
  bool try_finalize() { return cudnnBackendFinalize(raw_) == CUDNN_STATUS_SUCCESS; }
  void finalize() { DCAE_CUDNN_CHECK(cudnnBackendFinalize(raw_)); }

 private:
  cudnnBackendDescriptor_t raw_ = nullptr;
};

// The calling thread's handle for `device`, shared by every cuDNN user on the thread (each sets its stream before
// it executes a plan). Created on first use, never destroyed: at process exit the driver may be gone before
// thread-local destructors run.
cudnnHandle_t handle_for(int device);

// The engine configurations cuDNN's heuristic proposes for a finalized operation graph in `mode`, best first (none
// when it has no answer).
std::vector<Descriptor> engine_configs(const Descriptor& operation_graph, cudnnBackendHeurMode_t mode);

// What the engine behind a configuration is: its global index, whether its kernels are compiled at run time
// (finalizing such a plan can take a second or more) and its numerical notes. `known` is false when cuDNN would
// not say (the configuration is then best left alone).
struct EngineInfo {
  bool known = false;
  int64_t id = -1;
  bool runtime_compiled = false;
  std::vector<cudnnBackendNumericalNote_t> numerical_notes;
};
EngineInfo describe_engine(const Descriptor& config);

}  // namespace dcae::ops::cuda::cudnn
