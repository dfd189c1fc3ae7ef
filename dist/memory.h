// Per-rank memory by category, as the data-parallel layers see it: what the progress line and metrics report.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace dcae::dist {

struct MemoryStats {
  int64_t parameters = 0;             // persistent parameter storage (FSDP: the shards)
  int64_t gathered_parameters = 0;    // FSDP: full parameters of the units gathered right now
  int64_t gradients = 0;              // gradient buffers held now (FSDP: fp32 shard grads + unsharded grads)
  int64_t optimizer_state = 0;        // reported by the caller (set_optimizer_state_bytes)
  int64_t activations = 0;            // reported by the caller (the trainer measures what a forward keeps)
  int64_t communication_buffers = 0;  // staging buffers alive now (buckets, gather/scatter staging)
  int64_t communication_peak = 0;     // the most the staging buffers ever held at once

  int64_t total() const {
    return parameters + gathered_parameters + gradients + optimizer_state + activations + communication_buffers;
  }
  // {"parameters": bytes, ...} for the JSONL metrics.
  nlohmann::json to_json() const;
  // "params 1.5 MiB, gathered 0 B, grads 512 KiB, optim 3 MiB, activations 0 B, comm 0 B (peak 96 KiB)".
  std::string str() const;
};

// "1.5 MiB"
std::string format_bytes(int64_t bytes);

}  // namespace dcae::dist
