// Where a tensor's memory lives. CUDA is a first-class device; its storage and kernels come with the CUDA backend.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

namespace dcae {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  static Device parse(const std::string& text);  // "cpu", "cuda", "cuda:1"

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device& other) const { return type == other.type && index == other.index; }
  bool operator!=(const Device& other) const { return !(*this == other); }
  std::string str() const;
};

inline std::ostream& operator<<(std::ostream& out, const Device& device) { return out << device.str(); }

// True when this build has CUDA kernels and a GPU is visible.
bool cuda_available();

}  // namespace dcae
