// Private pools of CUDA graphs in the caching allocator, against a host fake of the device (runs on any machine of
// a CUDA build): requests on a capturing stream come from the pool, blocks freed during a capture (the graph's own
// and everyone else's) stay with the pool, ordinary requests never get them, and release_pool hands them back.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>

#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/caching_allocator.h"
#include "tests/testing/check.h"

namespace dcae::cuda {
namespace {

// The smallest device: host memory, one current stream the test sets, events that are always complete.
class HostDevice final : public DeviceMemoryApi {
 public:
  StreamHandle stream = nullptr;
  int mallocs = 0, frees = 0;
  void* malloc(size_t bytes) override {
    ++mallocs;
    return std::aligned_alloc(512, bytes);
  }
  void free(void* ptr) override {
    ++frees;
    std::free(ptr);
  }
  void memory_info(size_t& free_bytes, size_t& total_bytes) override { free_bytes = total_bytes = size_t{1} << 30; }
  StreamHandle current_stream() override { return stream; }
  void* create_event() override { return new char; }
  void destroy_event(void* event) override { delete static_cast<char*>(event); }
  void record_event(void*, StreamHandle) override {}
  bool event_done(void*) override { return true; }
  void wait_event(void*) override {}
  void synchronize() override {}
  void fill_bytes(void* ptr, uint8_t value, size_t bytes, StreamHandle) override { std::memset(ptr, value, bytes); }
};

StreamHandle stream_id(uintptr_t id) { return reinterpret_cast<StreamHandle>(id); }

class AllocatorPoolTest : public ::testing::Test {
 protected:
  HostDevice* device = new HostDevice;
  CachingAllocator allocator{0, std::unique_ptr<DeviceMemoryApi>(device)};
  const StreamHandle capture_stream = stream_id(7);
};

TEST_F(AllocatorPoolTest, CaptureRequestsComeFromThePoolAndStayThere) {
  void* ordinary_free = allocator.allocate(4096);
  allocator.deallocate(ordinary_free, 4096);  // a cached ordinary block of the default stream

  device->stream = capture_stream;
  allocator.begin_capture_pool(capture_stream, 1);
  void* scratch = allocator.allocate(4096);
  EXPECT_NE(scratch, ordinary_free);
  EXPECT_EQ(allocator.stats().device_mallocs, 2);  // the pool's own segment
  allocator.deallocate(scratch, 4096);
  EXPECT_EQ(allocator.allocate(4096), scratch);  // reused inside the capture
  void* output = scratch;
  allocator.end_capture_pool(capture_stream);
  EXPECT_EQ(allocator.pool_reserved_bytes(1), CachingAllocator::kSmallSegment);

  // After the capture: the graph's blocks are its own, whatever stream asks.
  allocator.deallocate(output, 4096);
  device->stream = nullptr;
  void* a = allocator.allocate(4096);
  EXPECT_EQ(a, ordinary_free);
  device->stream = capture_stream;
  void* b = allocator.allocate(4096);
  EXPECT_NE(b, output);
  EXPECT_EQ(allocator.pool_reserved_bytes(1), CachingAllocator::kSmallSegment);

  // Released: the pool's free blocks serve ordinary requests again, without another device allocation.
  allocator.release_pool(1);
  EXPECT_EQ(allocator.pool_reserved_bytes(1), 0u);
  const int64_t mallocs = allocator.stats().device_mallocs;
  allocator.deallocate(b, 4096);
  allocator.deallocate(a, 4096);
  void* again = allocator.allocate(4096);  // capture_stream's cache now holds the old pool segment
  EXPECT_EQ(allocator.stats().device_mallocs, mallocs);
  allocator.deallocate(again, 4096);
  allocator.empty_cache();
  EXPECT_EQ(allocator.stats().reserved_bytes, 0u);
}

TEST_F(AllocatorPoolTest, BlocksFreedDuringACaptureJoinThePool) {
  void* input = allocator.allocate(4096);  // made before the capture, freed during it: the graph may still read it
  allocator.begin_capture_pool(capture_stream, 3);
  allocator.deallocate(input, 4096);
  allocator.end_capture_pool(capture_stream);
  void* next = allocator.allocate(4096);
  EXPECT_NE(next, input);
  allocator.release_pool(3);
  allocator.deallocate(next, 4096);
  EXPECT_EQ(allocator.allocate(4096), input);  // back in the ordinary cache, merged with its segment
}

TEST_F(AllocatorPoolTest, CapturesAreCheckedAndEmptyCacheIsRefusedDuringOne) {
  allocator.begin_capture_pool(capture_stream, 5);
  testing::expect_error([&] { allocator.begin_capture_pool(capture_stream, 6); }, "already capturing");
  testing::expect_error([&] { allocator.empty_cache(); }, "while a CUDA graph is being captured");
  allocator.end_capture_pool(capture_stream);
  testing::expect_error([&] { allocator.begin_capture_pool(capture_stream, 0); }, "pool 0 is the ordinary cache");
  allocator.empty_cache();
}

}  // namespace
}  // namespace dcae::cuda
#endif
