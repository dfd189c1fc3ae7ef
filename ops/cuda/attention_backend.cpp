// Which implementation scaled dot-product attention runs (ops/cuda/attention.h: AttentionBackend): the setting,
// its start-up value from DCAE_ATTENTION_BACKEND, and what the calling thread ran last.
#include <atomic>
#include <cstdlib>
#include <string>

#include "core/tensor/error.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/attention_common.h"
#include "ops/cuda/cudnn_attention.h"

namespace dcae::ops::cuda {

namespace {

// Read from the environment once, at the first attention call.
std::atomic<AttentionBackend>& backend_setting() {
  static std::atomic<AttentionBackend> setting{[] {
    const char* value = std::getenv("DCAE_ATTENTION_BACKEND");
    return attention_backend_from_string(value == nullptr ? "" : value);
  }()};
  return setting;
}

thread_local std::string t_last_kernels = "none";

}  // namespace

AttentionBackend attention_backend_from_string(const std::string& value) {
  if (value.empty() || value == "auto") return AttentionBackend::automatic;
  if (value == "cudnn") return AttentionBackend::cudnn;
  if (value == "own") return AttentionBackend::own;
  DCAE_FAIL("DCAE_ATTENTION_BACKEND must be auto, cudnn or own, got '", value, "'");
}

AttentionBackend attention_backend() { return backend_setting().load(); }

AttentionBackend set_attention_backend(AttentionBackend backend) { return backend_setting().exchange(backend); }

std::string last_attention_kernels() { return t_last_kernels; }

namespace attention_detail {

void set_last_attention_kernels(std::string kernels) { t_last_kernels = std::move(kernels); }

bool cudnn_attention_wanted(const AttentionParams& p, DType dtype, bool masked_or_scores, bool backward) {
  const AttentionBackend backend = attention_backend();
  if (backend == AttentionBackend::own || masked_or_scores || !cudnn_attention_expressible(p, dtype)) return false;
  return backend == AttentionBackend::cudnn ||
         p.lk >= (backward ? kCudnnAttentionBackwardMinKeys : kCudnnAttentionForwardMinKeys);
}

}  // namespace attention_detail

}  // namespace dcae::ops::cuda
