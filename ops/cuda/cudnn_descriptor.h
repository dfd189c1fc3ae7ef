// Pieces of cuDNN 9's backend API shared by the convolution files (ops/cuda/cudnn_conv.cpp and
// cudnn_conv_knobs.cpp): a checked call, and an owned backend descriptor.
#pragma once
#include <cudnn_graph.h>

#include <string>
#include <utility>

#include "core/tensor/tensor.h"

namespace dcae::ops::cuda::cudnn_conv_detail {

inline void check_cudnn(cudnnStatus_t status, const char* call) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char detail[1024] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));
  DCAE_FAIL(call, " failed: ", cudnnGetErrorString(status), detail[0] != '\0' ? std::string(": ") + detail : "");
}
#define DCAE_CUDNN_CHECK(call) ::dcae::ops::cuda::cudnn_conv_detail::check_cudnn((call), #call)

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
  // Unsupported configurations fail to finalize; that is an answer, not an error.
  bool try_finalize() { return cudnnBackendFinalize(raw_) == CUDNN_STATUS_SUCCESS; }
  void finalize() { DCAE_CUDNN_CHECK(cudnnBackendFinalize(raw_)); }

 private:
  cudnnBackendDescriptor_t raw_ = nullptr;
};

}  // namespace dcae::ops::cuda::cudnn_conv_detail
