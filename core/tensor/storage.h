// A ref-counted byte buffer on one device, obtained from an Allocator. Views of a tensor share one Storage; the
// version counter lives here so that an in-place edit through any view is seen by autograd's saved tensors.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/tensor/device.h"

namespace dcae {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual Device device() const = 0;
  // Host memory the GPU can DMA from directly (cudaHostAlloc): host-to-device copies from it run asynchronously.
  virtual bool page_locked() const { return false; }
};

// 64-byte aligned host memory; counts bytes in use and the peak, for memory tests and logs.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  static CpuAllocator& instance();
  size_t bytes_in_use() const;
  size_t peak_bytes() const;
  void reset_peak();
};

Allocator& allocator_for(Device device);

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  // Memory from a specific allocator (e.g. page-locked host memory for loader batches).
  Storage(size_t nbytes, Allocator& allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  bool page_locked() const { return allocator_->page_locked(); }
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
  uint64_t version_ = 0;
};

}  // namespace dcae
