#include "dist/memory.h"

#include <cstdio>

namespace dcae::dist {

std::string format_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0)
    std::snprintf(text, sizeof(text), "%lld B", static_cast<long long>(bytes));
  else
    std::snprintf(text, sizeof(text), "%.1f %s", value, units[unit]);
  return text;
}

nlohmann::json MemoryStats::to_json() const {
  return {{"parameters", parameters},
          {"gathered_parameters", gathered_parameters},
          {"gradients", gradients},
          {"optimizer_state", optimizer_state},
          {"activations", activations},
          {"communication_buffers", communication_buffers},
          {"communication_peak", communication_peak},
          {"total", total()}};
}

std::string MemoryStats::str() const {
  return "params " + format_bytes(parameters) + ", gathered " + format_bytes(gathered_parameters) + ", grads " +
         format_bytes(gradients) + ", optim " + format_bytes(optimizer_state) + ", activations " + format_bytes(activations) + ", comm " +
         format_bytes(communication_buffers) + " (peak " + format_bytes(communication_peak) + ")";
}

}  // namespace dcae::dist
