// Small HDF5 C-API helpers for the shard format: owning handles, one process-wide lock (HDF5 calls are
// serialised; decoding runs outside it) and error text taken from HDF5's own error stack.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace dcae::datasets::hdf5 {

// Locks the process-wide HDF5 mutex and turns off HDF5's automatic error printing for this thread.
class Lock {
 public:
  Lock();

 private:
  std::lock_guard<std::recursive_mutex> guard_;
};

// The innermost messages of the current thread's HDF5 error stack ("" when empty); clears the stack.
std::string error_text();

// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& other) noexcept : id_(other.id_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();
  hid_t release() {  // gives up ownership without closing
    const hid_t id = id_;
    id_ = -1;
    return id;
  }

 private:
  hid_t id_ = -1;
};

// The variable-length types of the format: byte strings (uint8 sequences) and UTF-8 strings.
Handle vlen_bytes_type();
Handle vlen_string_type();

// Scalar attributes on an object (file or dataset). Readers return false when the attribute is missing.
void write_int_attribute(hid_t object, const char* name, int64_t value);
void write_string_attribute(hid_t object, const char* name, const std::string& value);
bool read_int_attribute(hid_t object, const char* name, int64_t& value);
bool read_string_attribute(hid_t object, const char* name, std::string& value);

// Shape of a dataset (empty when it cannot be read).
std::vector<int64_t> dataset_dims(hid_t dataset);

// Frees what HDF5 allocated for variable-length data read into `buffer` (version-independent).
void reclaim_vlen(hid_t type, hid_t space, void* buffer);

}  // namespace dcae::datasets::hdf5
