// The caching allocator for device memory.
//
// Device memory comes from the driver in segments (2 MiB for small requests, 20 MiB or the rounded request for
// large ones) and is cut into blocks. A freed block goes back into the cache of the stream it was allocated on and
// is merged with free neighbours; the next request of that stream reuses it without a driver call. Work on a stream
// runs in order, so a block reused by the same stream cannot be touched by older work. A block that was also used
// on other streams (record_stream) returns to the cache only once events recorded on those streams at free time
// have completed. Requests are rounded to 512 bytes; small (<= 1 MiB) and large requests use separate caches.
// When the driver has no memory left, the cache is released to the driver and the request retried once; then an
// out-of-memory error says how much was asked, how much this process holds, and how much the device has free.
//
// CUDA graphs get private pools: while a stream is registered for capture (begin_capture_pool), its requests are
// served from and returned to blocks of that pool only, and blocks freed by anyone during the capture join the pool
// (the graph may still use them at replay). A pool's blocks never serve ordinary requests until release_pool (the
// graph is gone); then its free blocks rejoin the ordinary cache.
//
// The block logic talks to the device only through DeviceMemoryApi, so tests can drive it with a host fake.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include "core/tensor/cuda/stream.h"
#include "core/tensor/storage.h"

namespace dcae::cuda {

// What the cache needs from a device. The production version wraps the CUDA runtime (caching_allocator_cuda.cpp).
class DeviceMemoryApi {
 public:
  virtual ~DeviceMemoryApi() = default;
  virtual void* malloc(size_t bytes) = 0;  // nullptr when the device is out of memory
  virtual void free(void* ptr) = 0;
  virtual void memory_info(size_t& free_bytes, size_t& total_bytes) = 0;
  virtual StreamHandle current_stream() = 0;
  virtual void* create_event() = 0;
  virtual void destroy_event(void* event) = 0;
  virtual void record_event(void* event, StreamHandle stream) = 0;
  virtual bool event_done(void* event) = 0;
  virtual void wait_event(void* event) = 0;
  virtual void synchronize() = 0;  // the whole device, before memory goes back to the driver
  virtual void fill_bytes(void* ptr, uint8_t value, size_t bytes, StreamHandle stream) = 0;
};

struct AllocatorStats {
  size_t allocated_bytes = 0;       // in blocks handed out (rounded sizes)
  size_t requested_bytes = 0;       // as asked for
  size_t reserved_bytes = 0;        // segments held from the driver
  size_t peak_allocated_bytes = 0;
  size_t peak_reserved_bytes = 0;
  int64_t active_blocks = 0;
  int64_t segments = 0;
  int64_t allocations = 0;          // calls to allocate() with a non-zero size
  int64_t device_mallocs = 0;       // segments obtained from the driver
  int64_t device_frees = 0;         // segments returned to the driver
  int64_t cache_flushes = 0;        // times the cache was released to satisfy a request
  int64_t out_of_memory_errors = 0;
};

class CachingAllocator final : public Allocator {
 public:
  static constexpr size_t kRound = 512;
  static constexpr size_t kSmallRequest = size_t{1} << 20;  // at most this goes to the small cache
  static constexpr size_t kSmallSegment = size_t{2} << 20;
  static constexpr size_t kLargeSegment = size_t{20} << 20;  // for large requests under kMediumRequest
  static constexpr size_t kMediumRequest = size_t{10} << 20;
  static constexpr size_t kLargeRound = size_t{2} << 20;

  CachingAllocator(int device, std::unique_ptr<DeviceMemoryApi> api);
  ~CachingAllocator() override;  // returns cached memory; blocks still in use are the owner's problem

  // A block of at least `nbytes` usable on the current stream of this device (nullptr for 0 bytes).
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cuda(device_); }

  // Marks the block at `ptr` (as returned by allocate) as used on `stream` too: when it is freed, it is reused
  // only after the work queued on `stream` up to that point has finished.
  void record_stream(void* ptr, StreamHandle stream);
  // Returns every unused cached segment to the driver (waits for pending cross-stream frees first).
  void empty_cache();

  // Private pools of CUDA graphs (`pool` > 0, unique per graph). From begin_capture_pool until end_capture_pool,
  // requests made on `stream` are served from `pool`, and every block freed meanwhile joins `pool`.
  void begin_capture_pool(StreamHandle stream, uint64_t pool);
  void end_capture_pool(StreamHandle stream);
  // The graph of `pool` is gone: its free blocks rejoin the ordinary cache, its live ones do when they are freed.
  void release_pool(uint64_t pool);
  // Bytes in segments of `pool` (live and free).
  size_t pool_reserved_bytes(uint64_t pool) const;

  AllocatorStats stats() const;
  void reset_peak_stats();
  // Caps reserved memory at `bytes` (0 = no cap): a request that would pass it behaves as a driver out-of-memory.
  void set_memory_limit(size_t bytes);
  // Debug aid for compute-sanitizer: with caching off every block is its own driver allocation of the rounded
  // size, returned to the driver when freed (set from DCAE_CUDA_NO_CACHING=1 at start-up).
  void set_caching(bool caching);
  // Debug aid: fill every handed-out block with 0xFF bytes (NaN in every float dtype) on its stream.
  void set_poison_on_allocate(bool poison);

  // Bytes a request of `nbytes` is rounded to, and the segment size obtained for it when nothing is cached.
  static size_t round_size(size_t nbytes);
  static size_t segment_size(size_t rounded);

 private:
  struct Block {
    uint64_t pool = 0;  // 0: the ordinary cache; else the private pool of a CUDA graph
    StreamHandle stream = nullptr;
    char* ptr = nullptr;
    size_t size = 0;
    size_t requested = 0;
    bool small = false;
    bool allocated = false;
    int pending_events = 0;
    Block* prev = nullptr;  // neighbours in the same segment
    Block* next = nullptr;
    std::vector<StreamHandle> other_streams;
  };
  struct BlockOrder {  // by pool, stream, size, address: lower_bound finds the best fit of a pool and stream
    bool operator()(const Block* a, const Block* b) const;
  };
  using Pool = std::set<Block*, BlockOrder>;
  struct PendingFree {
    void* event;
    Block* block;
  };

  Pool& pool_for(bool small) { return small ? small_pool_ : large_pool_; }
  Block* find_free_block(Pool& pool, uint64_t pool_id, StreamHandle stream, size_t size);
  Block* new_segment(size_t rounded, bool small, uint64_t pool_id, StreamHandle stream);
  uint64_t capture_pool_of(StreamHandle stream) const;  // 0 when `stream` is not capturing
  void* try_device_malloc(size_t bytes);
  void split(Block* block, size_t size, Pool& pool);
  void free_block(Block* block);
  void process_pending_frees(bool wait);
  void release_cached_segments();
  void* take_event();
  [[noreturn]] void fail_out_of_memory(size_t nbytes, size_t rounded);

  const int device_;
  std::unique_ptr<DeviceMemoryApi> api_;
  mutable std::mutex mutex_;
  Pool small_pool_, large_pool_;
  std::unordered_map<void*, Block*> active_;
  std::deque<PendingFree> pending_;
  std::vector<void*> spare_events_;
  AllocatorStats stats_;
  std::unordered_map<StreamHandle, uint64_t> capturing_;  // streams under capture -> their pool
  std::set<uint64_t> live_pools_;
  size_t limit_ = 0;
  bool caching_ = true;
  bool poison_ = false;
};

// The caching allocator of `device` (created on first use, kept for the life of the process).
CachingAllocator& caching_allocator(int device);

}  // namespace dcae::cuda
