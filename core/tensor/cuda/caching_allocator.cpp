#include "core/tensor/cuda/caching_allocator.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iomanip>
#include <sstream>

#include "core/tensor/error.h"

namespace dcae::cuda {

namespace {

std::string format_bytes(size_t bytes) {
  std::ostringstream out;
  const double b = static_cast<double>(bytes);
  out << std::fixed << std::setprecision(2);
  if (bytes >= (size_t{1} << 30)) out << b / (1 << 30) << " GiB";
  else if (bytes >= (size_t{1} << 20)) out << b / (1 << 20) << " MiB";
  else if (bytes >= (size_t{1} << 10)) out << b / (1 << 10) << " KiB";
  else out << bytes << " bytes";
  if (bytes >= (size_t{1} << 10)) out << " (" << bytes << " bytes)";
  return out.str();
}

}  // namespace

bool CachingAllocator::BlockOrder::operator()(const Block* a, const Block* b) const {
  if (a->pool != b->pool) return a->pool < b->pool;
  if (a->stream != b->stream) return std::less<StreamHandle>()(a->stream, b->stream);
  if (a->size != b->size) return a->size < b->size;
  return std::less<char*>()(a->ptr, b->ptr);
}

CachingAllocator::CachingAllocator(int device, std::unique_ptr<DeviceMemoryApi> api)
    : device_(device), api_(std::move(api)) {}

CachingAllocator::~CachingAllocator() {
  try {
    empty_cache();
    for (void* event : spare_events_) api_->destroy_event(event);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dcae: releasing the CUDA cache of cuda:%d failed: %s\n", device_, e.what());
  }
}

size_t CachingAllocator::round_size(size_t nbytes) {
  return nbytes < kRound ? kRound : (nbytes + kRound - 1) / kRound * kRound;
}

size_t CachingAllocator::segment_size(size_t rounded) {
  if (rounded <= kSmallRequest) return kSmallSegment;
  if (rounded < kMediumRequest) return kLargeSegment;
  return (rounded + kLargeRound - 1) / kLargeRound * kLargeRound;
}

void* CachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  process_pending_frees(/*wait=*/false);
  const size_t size = round_size(nbytes);
  const bool small = size <= kSmallRequest;
  const StreamHandle stream = api_->current_stream();
  const uint64_t pool_id = capture_pool_of(stream);
  Pool& pool = pool_for(small);

  Block* block = find_free_block(pool, pool_id, stream, size);
  if (block == nullptr) block = new_segment(size, small, pool_id, stream);
  if (block == nullptr && capturing_.empty()) {
    // Out of device memory: give the cache back to the driver and try once more.
    ++stats_.cache_flushes;
    process_pending_frees(/*wait=*/true);
    release_cached_segments();
    block = new_segment(size, small, pool_id, stream);
  }
  if (block == nullptr) fail_out_of_memory(nbytes, size);

  split(block, size, pool);
  block->allocated = true;
  block->requested = nbytes;
  active_.emplace(block->ptr, block);
  ++stats_.allocations;
  ++stats_.active_blocks;
  stats_.allocated_bytes += block->size;
  stats_.requested_bytes += nbytes;
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  if (poison_) api_->fill_bytes(block->ptr, 0xFF, block->size, stream);
  return block->ptr;
}

uint64_t CachingAllocator::capture_pool_of(StreamHandle stream) const {
  if (capturing_.empty()) return 0;
  auto it = capturing_.find(stream);
  return it == capturing_.end() ? 0 : it->second;
}

CachingAllocator::Block* CachingAllocator::find_free_block(Pool& pool, uint64_t pool_id, StreamHandle stream,
                                                           size_t size) {
  Block key;
  key.pool = pool_id;
  key.stream = stream;
  key.size = size;
  auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->pool != pool_id || (*it)->stream != stream) return nullptr;
  Block* block = *it;
  pool.erase(it);
  return block;
}

void* CachingAllocator::try_device_malloc(size_t bytes) {
  if (limit_ != 0 && stats_.reserved_bytes + bytes > limit_) return nullptr;
  return api_->malloc(bytes);
}

CachingAllocator::Block* CachingAllocator::new_segment(size_t rounded, bool small, uint64_t pool_id,
                                                       StreamHandle stream) {
  size_t bytes = caching_ ? segment_size(rounded) : rounded;
  void* ptr = try_device_malloc(bytes);
  if (ptr == nullptr && bytes > rounded) {  // a tight fit may still be there when the padded segment is not
    bytes = rounded;
    ptr = try_device_malloc(bytes);
  }
  if (ptr == nullptr) return nullptr;
  ++stats_.device_mallocs;
  ++stats_.segments;
  stats_.reserved_bytes += bytes;
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  auto* block = new Block;
  block->pool = pool_id;
  block->stream = stream;
  block->ptr = static_cast<char*>(ptr);
  block->size = bytes;
  block->small = small;
  return block;
}

void CachingAllocator::split(Block* block, size_t size, Pool& pool) {
  const size_t remaining = block->size - size;
  // Small blocks split down to the rounding unit; large ones only when the rest is worth a large request.
  const bool worth_it = block->small ? remaining >= kRound : remaining > kSmallRequest;
  if (!worth_it) return;
  auto* rest = new Block;
  rest->pool = block->pool;
  rest->stream = block->stream;
  rest->ptr = block->ptr + size;
  rest->size = remaining;
  rest->small = block->small;
  rest->prev = block;
  rest->next = block->next;
  if (rest->next != nullptr) rest->next->prev = rest;
  block->next = rest;
  block->size = size;
  pool.insert(rest);
}

void CachingAllocator::deallocate(void* ptr, size_t) {
  if (ptr == nullptr) return;
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = active_.find(ptr);
    if (it == active_.end()) {
      std::fprintf(stderr, "dcae: cuda:%d allocator asked to free %p, which it did not hand out\n", device_, ptr);
      return;
    }
    Block* block = it->second;
    active_.erase(it);
    --stats_.active_blocks;
    stats_.allocated_bytes -= block->size;
    stats_.requested_bytes -= block->requested;
    if (!capturing_.empty()) {
      // A capture is under way: the graph may use this block at replay, so only the graph may reuse it.
      if (block->pool == 0) block->pool = capturing_.begin()->second;
    } else if (block->pool != 0 && !live_pools_.contains(block->pool)) {
      block->pool = 0;  // its graph is gone
    }
    if (block->other_streams.empty()) {
      free_block(block);
      if (!caching_) release_cached_segments();
      return;
    }
    // Used on other streams: reusable once the work queued there up to now has finished.
    for (StreamHandle stream : block->other_streams) {
      void* event = take_event();
      api_->record_event(event, stream);
      pending_.push_back({event, block});
      ++block->pending_events;
    }
    block->other_streams.clear();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dcae: freeing CUDA memory on cuda:%d failed: %s\n", device_, e.what());
  }
}

void CachingAllocator::record_stream(void* ptr, StreamHandle stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = active_.find(ptr);
  DCAE_CHECK(it != active_.end(), "record_stream: ", ptr, " is not a live block of the cuda:", device_, " allocator");
  Block* block = it->second;
  if (stream == block->stream) return;
  if (std::find(block->other_streams.begin(), block->other_streams.end(), stream) == block->other_streams.end())
    block->other_streams.push_back(stream);
}

void CachingAllocator::free_block(Block* block) {
  block->allocated = false;
  Pool& pool = pool_for(block->small);
  // Merge with free neighbours of the same segment (blocks waiting on events count as in use).
  const uint64_t pool_id = block->pool;  // blocks of different pools never merge
  const auto free_neighbour = [pool_id](Block* b) {
    return b != nullptr && !b->allocated && b->pending_events == 0 && b->pool == pool_id;
  };
  if (free_neighbour(block->prev)) {
    Block* prev = block->prev;
    pool.erase(prev);
    prev->size += block->size;
    prev->next = block->next;
    if (prev->next != nullptr) prev->next->prev = prev;
    delete block;
    block = prev;
  }
  if (free_neighbour(block->next)) {
    Block* next = block->next;
    pool.erase(next);
    block->size += next->size;
    block->next = next->next;
    if (block->next != nullptr) block->next->prev = block;
    delete next;
  }
  pool.insert(block);
}

void CachingAllocator::process_pending_frees(bool wait) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (wait) api_->wait_event(it->event);
    else if (!api_->event_done(it->event)) {
      ++it;
      continue;
    }
    spare_events_.push_back(it->event);
    Block* block = it->block;
    it = pending_.erase(it);
    // pending blocks are still marked allocated so that neighbours do not merge into them
    if (--block->pending_events == 0) {
      if (block->pool != 0 && !live_pools_.contains(block->pool)) block->pool = 0;  // its graph is gone
      free_block(block);
      if (!caching_) release_cached_segments();
    }
  }
}

void CachingAllocator::release_cached_segments() {
  bool synced = false;
  for (Pool* pool : {&small_pool_, &large_pool_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* block = *it;
      if (block->prev != nullptr || block->next != nullptr || block->pool != 0) {  // in use, or a graph's
        ++it;
        continue;
      }
      if (!synced) {  // the driver may still be using freed blocks for queued work
        api_->synchronize();
        synced = true;
      }
      api_->free(block->ptr);
      ++stats_.device_frees;
      --stats_.segments;
      stats_.reserved_bytes -= block->size;
      it = pool->erase(it);
      delete block;
    }
  }
}

void* CachingAllocator::take_event() {
  if (spare_events_.empty()) return api_->create_event();
  void* event = spare_events_.back();
  spare_events_.pop_back();
  return event;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  DCAE_CHECK(capturing_.empty(), "empty_cache on cuda:", device_,
             " while a CUDA graph is being captured: returning memory to the driver synchronises the device");
  process_pending_frees(/*wait=*/true);
  release_cached_segments();
}

void CachingAllocator::fail_out_of_memory(size_t nbytes, size_t rounded) {
  ++stats_.out_of_memory_errors;
  size_t free_bytes = 0, total_bytes = 0;
  api_->memory_info(free_bytes, total_bytes);
  std::ostringstream limit;
  if (limit_ != 0) limit << "; this allocator is capped at " << format_bytes(limit_);
  DCAE_FAIL("CUDA out of memory on cuda:", device_, ": asked for ", format_bytes(nbytes), " (", format_bytes(rounded),
            " rounded); this process holds ", format_bytes(stats_.reserved_bytes), " (", format_bytes(stats_.allocated_bytes),
            " in live tensors, the rest cached); the device has ", format_bytes(free_bytes), " free of ",
            format_bytes(total_bytes), limit.str());
}

void CachingAllocator::begin_capture_pool(StreamHandle stream, uint64_t pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  DCAE_CHECK(pool != 0, "begin_capture_pool: pool 0 is the ordinary cache; a graph's pool id must be > 0");
  DCAE_CHECK(!capturing_.contains(stream), "begin_capture_pool: stream ", static_cast<void*>(stream), " of cuda:",
             device_, " is already capturing into pool ", capturing_[stream]);
  capturing_[stream] = pool;
  live_pools_.insert(pool);
}

void CachingAllocator::end_capture_pool(StreamHandle stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  capturing_.erase(stream);
}

void CachingAllocator::release_pool(uint64_t pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  live_pools_.erase(pool);
  for (Pool* cache : {&small_pool_, &large_pool_}) {
    std::vector<Block*> freed;
    for (Block* block : *cache)
      if (block->pool == pool) freed.push_back(block);
    for (Block* block : freed) {
      cache->erase(block);
      block->pool = 0;
      free_block(block);  // merges with ordinary free neighbours
    }
  }
}

size_t CachingAllocator::pool_reserved_bytes(uint64_t pool) const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t bytes = 0;
  const auto count = [&](const Block* block) {
    if (block->pool == pool) bytes += block->size;
  };
  for (const Pool* cache : {&small_pool_, &large_pool_})
    for (const Block* block : *cache) count(block);
  for (const auto& [ptr, block] : active_) count(block);
  return bytes;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

void CachingAllocator::set_memory_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  limit_ = bytes;
}

void CachingAllocator::set_caching(bool caching) {
  std::lock_guard<std::mutex> lock(mutex_);
  caching_ = caching;
  if (!caching_) release_cached_segments();
}

void CachingAllocator::set_poison_on_allocate(bool poison) {
  std::lock_guard<std::mutex> lock(mutex_);
  poison_ = poison;
}

}  // namespace dcae::cuda
