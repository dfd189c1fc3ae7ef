#include "core/tensor/storage.h"

#include <atomic>
#include <cstdlib>

#include "core/tensor/error.h"

namespace dcae {

namespace {
std::atomic<size_t> g_cpu_in_use{0};
std::atomic<size_t> g_cpu_peak{0};
}  // namespace

void* CpuAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t rounded = (nbytes + 63) / 64 * 64;
  void* ptr = std::aligned_alloc(64, rounded);
  DCAE_CHECK(ptr != nullptr, "out of host memory: asked for ", nbytes, " bytes with ", g_cpu_in_use.load(),
             " bytes already held by tensors");
  const size_t now = g_cpu_in_use.fetch_add(nbytes) + nbytes;
  size_t peak = g_cpu_peak.load();
  while (now > peak && !g_cpu_peak.compare_exchange_weak(peak, now)) {
  }
  return ptr;
}

void CpuAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  g_cpu_in_use.fetch_sub(nbytes);
}

CpuAllocator& CpuAllocator::instance() {
  static CpuAllocator allocator;
  return allocator;
}
size_t CpuAllocator::bytes_in_use() const { return g_cpu_in_use.load(); }
size_t CpuAllocator::peak_bytes() const { return g_cpu_peak.load(); }
void CpuAllocator::reset_peak() { g_cpu_peak.store(g_cpu_in_use.load()); }

#ifndef DCAE_WITH_CUDA
Allocator& allocator_for(Device device) {
  DCAE_CHECK(device.is_cpu(), "cannot allocate on ", device, ": this build of dcae has no CUDA support");
  return CpuAllocator::instance();
}
#endif

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device), allocator_(&allocator_for(device)) {
  data_ = allocator_->allocate(nbytes);
}

Storage::Storage(size_t nbytes, Allocator& allocator)
    : nbytes_(nbytes), device_(allocator.device()), allocator_(&allocator) {
  data_ = allocator_->allocate(nbytes);
}

Storage::~Storage() { allocator_->deallocate(data_, nbytes_); }

}  // namespace dcae
