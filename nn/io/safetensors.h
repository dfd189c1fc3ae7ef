// safetensors files: a validating, memory-mapped reader and an atomic writer. Format: 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, then the raw little-endian tensor bytes.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace dcae::nn {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0;  // byte range inside the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps the file and validates the whole header: length, JSON, dtypes, shapes x dtype size = byte range, ranges
  // inside the file, tiling without gaps or overlaps, no duplicate names. Errors name the file and the problem.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // in file (offset) order
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A CPU tensor holding a copy of the named tensor's bytes.
  Tensor load(const std::string& name) const;

 private:
  std::string path_;
  void* mapping_ = nullptr;
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device/layout; stored contiguous) to `path` via a temporary file and rename, so a crash never
// leaves a half-written file under the final name. The header is space-padded to a multiple of 8.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

const char* safetensors_dtype_name(DType dtype);  // "F32", "BF16", ...

}  // namespace dcae::nn
