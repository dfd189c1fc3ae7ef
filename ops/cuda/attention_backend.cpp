// Which implementation scaled dot-product attention runs (ops/cuda/attention.h: AttentionBackend): the setting,
// its start-up value from DCAE_ATTENTION_BACKEND, and what the calling thread ran last.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/tensor/error.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/attention_common.h"
#include "ops/cuda/cudnn_attention.h"

namespace dcae::ops::cuda {

namespace {

AttentionBackend backend_from_environment() {
  const char* value = std::getenv("DCAE_ATTENTION_BACKEND");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) return AttentionBackend::automatic;
  if (std::strcmp(value, "cudnn") == 0) return AttentionBackend::cudnn;
  if (std::strcmp(value, "own") == 0) return AttentionBackend::own;
  DCAE_FAIL("DCAE_ATTENTION_BACKEND must be auto, cudnn or own, got '", value, "'");
}

std::atomic<AttentionBackend>& backend_setting() {
  static std::atomic<AttentionBackend> setting{backend_from_environment()};
  return setting;
}

thread_local std::string t_last_kernels = "none";

}  // namespace

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
