// Per-kernel GPU time through CUPTI's activity API: every kernel, copy and memset between start() and stop()
// (graph replays included), summed by name. dcae_model_bench --profile writes the table as JSON; the PyTorch peer
// writes the same from torch.profiler, and bench/kernel_families.py groups both into op families.
#pragma once
#ifdef DCAE_WITH_CUPTI
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "core/tensor/error.h"

namespace dcae::bench {

struct KernelTotals {
  int64_t count = 0;
  double total_us = 0;
};

class KernelProfile {
 public:
  static KernelProfile& instance() {
    static KernelProfile profile;
    return profile;
  }

  void start() {
    check(cuptiActivityRegisterCallbacks(&buffer_requested, &buffer_completed), "cuptiActivityRegisterCallbacks");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable(kernels)");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "cuptiActivityEnable(memcpy)");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "cuptiActivityEnable(memset)");
  }
  // Flushes the records of finished work (the caller synchronises first) and stops recording.
  void stop() {
    check(cuptiActivityFlushAll(1), "cuptiActivityFlushAll");
    cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cuptiActivityDisable(CUPTI_ACTIVITY_KIND_MEMCPY);
    cuptiActivityDisable(CUPTI_ACTIVITY_KIND_MEMSET);
  }
  // What was recorded so far, by kernel name; clear() forgets it (for the next measurement).
  const std::map<std::string, KernelTotals>& totals() const { return totals_; }
  void clear() { totals_.clear(); }
  // {"kernel name": [launches, total microseconds], ...} divided by `iterations`.
  void write_json(const std::string& path, int iterations) const {
    std::FILE* f = std::fopen(path.c_str(), "w");
    DCAE_CHECK(f != nullptr, "cannot write the kernel profile to ", path);
    std::fprintf(f, "{");
    bool first = true;
    for (const auto& [name, t] : totals_) {
      std::string escaped;
      for (char c : name) {
        if (c == '"' || c == '\\') escaped += '\\';
        escaped += c;
      }
      std::fprintf(f, "%s\n\"%s\": [%.3f, %.3f]", first ? "" : ",", escaped.c_str(),
                   static_cast<double>(t.count) / iterations, t.total_us / iterations);
      first = false;
    }
    std::fprintf(f, "\n}\n");
    std::fclose(f);
  }

 private:
  static void check(CUptiResult result, const char* call) {
    if (result == CUPTI_SUCCESS) return;
    const char* message = nullptr;
    cuptiGetResultString(result, &message);
    DCAE_FAIL(call, " failed: ", message != nullptr ? message : "unknown CUPTI error");
  }
  static void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *size = size_t{16} << 20;
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
    *max_records = 0;
  }
  static void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    KernelProfile& self = instance();
    CUpti_Activity* record = nullptr;
    std::lock_guard<std::mutex> lock(self.mutex_);
    while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
      if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || record->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        self.add(k->name != nullptr ? readable(k->name) : "?", k->end - k->start);
      } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        self.add("[memcpy kind " + std::to_string(m->copyKind) + "]", m->end - m->start);
      } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        self.add("[memset]", m->end - m->start);
      }
    }
    std::free(buffer);
  }
  // Demangled, without the parameter list (template arguments stay: they name the variant).
  static std::string readable(const char* mangled) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string name = status == 0 && demangled != nullptr ? demangled : mangled;
    std::free(demangled);
    for (const std::string noise : {"(anonymous namespace)::", "dcae::ops::cuda::", "dcae::cuda::"})
      for (size_t at = name.find(noise); at != std::string::npos; at = name.find(noise)) name.erase(at, noise.size());
    const size_t paren = name.find('(');
    if (paren != std::string::npos && paren > 0) name.resize(paren);
    if (name.size() > 240) name.resize(240);
    return name;
  }
  void add(const std::string& name, uint64_t ns) {
    KernelTotals& t = totals_[name];
    ++t.count;
    t.total_us += static_cast<double>(ns) * 1e-3;
  }

  std::mutex mutex_;
  std::map<std::string, KernelTotals> totals_;
};

}  // namespace dcae::bench
#endif
