#include "ops/cuda/math_mode.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace dcae::ops::cuda {

namespace {

bool env_flag(const char* name, bool fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strcmp(value, "0") != 0 && std::strcmp(value, "false") != 0 && std::strcmp(value, "off") != 0;
}

std::atomic<bool>& tf32_flag() {
  static std::atomic<bool> flag{env_flag("DCAE_ALLOW_TF32", false)};
  return flag;
}

std::atomic<bool>& autotune_flag() {
  static std::atomic<bool> flag{env_flag("DCAE_CUDNN_AUTOTUNE", true)};
  return flag;
}

}  // namespace

bool allow_tf32() { return tf32_flag().load(); }
void set_allow_tf32(bool allow) { tf32_flag().store(allow); }

bool conv_autotune() { return autotune_flag().load(); }
void set_conv_autotune(bool autotune) { autotune_flag().store(autotune); }

}  // namespace dcae::ops::cuda
