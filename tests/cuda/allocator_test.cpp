// The caching allocator: block logic against a host fake of the device (runs everywhere in CUDA builds), then the
// real allocator on the GPU (skipped without one).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "tests/cuda/cuda_test_util.h"

#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/caching_allocator.h"

namespace dcae::cuda {
namespace {

constexpr size_t MiB = size_t{1} << 20;

// Host memory with a capacity; streams are plain numbers; events complete when the test says their stream is done.
class FakeDevice final : public DeviceMemoryApi {
 public:
  struct State {
    size_t capacity = 256 * MiB;
    size_t used = 0;
    int mallocs = 0, frees = 0, syncs = 0;
    StreamHandle stream = nullptr;
    std::map<void*, size_t> live;
    std::map<void*, StreamHandle> events;  // event -> stream it waits on (nullptr once complete)
  };
  explicit FakeDevice(State* state) : s_(state) {}

  void* malloc(size_t bytes) override {
    if (s_->used + bytes > s_->capacity) return nullptr;
    void* p = std::aligned_alloc(512, bytes);
    s_->live[p] = bytes;
    s_->used += bytes;
    ++s_->mallocs;
    return p;
  }
  void free(void* ptr) override {
    s_->used -= s_->live.at(ptr);
    s_->live.erase(ptr);
    std::free(ptr);
    ++s_->frees;
  }
  void memory_info(size_t& free_bytes, size_t& total_bytes) override {
    free_bytes = s_->capacity - s_->used;
    total_bytes = s_->capacity;
  }
  StreamHandle current_stream() override { return s_->stream; }
  void* create_event() override {
    void* e = new char;
    s_->events[e] = nullptr;
    return e;
  }
  void destroy_event(void* event) override {
    s_->events.erase(event);
    delete static_cast<char*>(event);
  }
  void record_event(void* event, StreamHandle stream) override { s_->events[event] = stream; }
  bool event_done(void* event) override { return s_->events.at(event) == nullptr; }
  void wait_event(void* event) override { s_->events.at(event) = nullptr; }
  void synchronize() override {
    ++s_->syncs;
    for (auto& [e, stream] : s_->events) stream = nullptr;
  }
  void fill_bytes(void* ptr, uint8_t value, size_t bytes, StreamHandle) override { std::memset(ptr, value, bytes); }

 private:
  State* s_;
};

StreamHandle fake_stream(uintptr_t id) { return reinterpret_cast<StreamHandle>(id); }

// Marks the work queued on `stream` as finished.
void finish(FakeDevice::State& state, StreamHandle stream) {
  for (auto& [e, s] : state.events)
    if (s == stream) s = nullptr;
}

class FakeAllocatorTest : public ::testing::Test {
 protected:
  FakeDevice::State state;
  CachingAllocator allocator{0, std::make_unique<FakeDevice>(&state)};
};

TEST_F(FakeAllocatorTest, RoundsAndReusesWithoutDeviceMalloc) {
  void* a = allocator.allocate(1000);
  AllocatorStats s = allocator.stats();
  EXPECT_EQ(s.allocated_bytes, 1024u);
  EXPECT_EQ(s.requested_bytes, 1000u);
  EXPECT_EQ(s.reserved_bytes, CachingAllocator::kSmallSegment);
  EXPECT_EQ(s.device_mallocs, 1);
  allocator.deallocate(a, 1000);
  EXPECT_EQ(allocator.stats().allocated_bytes, 0u);
  for (int i = 0; i < 10; ++i) {
    void* b = allocator.allocate(900);
    EXPECT_EQ(b, a);  // the same block, straight from the cache
    allocator.deallocate(b, 900);
  }
  EXPECT_EQ(allocator.stats().device_mallocs, 1);
  EXPECT_EQ(state.mallocs, 1);
  EXPECT_EQ(allocator.allocate(0), nullptr);
}

TEST_F(FakeAllocatorTest, SplitsSegmentsAndMergesFreedNeighbours) {
  char* a = static_cast<char*>(allocator.allocate(512));
  char* b = static_cast<char*>(allocator.allocate(512));
  char* c = static_cast<char*>(allocator.allocate(512));
  EXPECT_EQ(b, a + 512);
  EXPECT_EQ(c, b + 512);
  EXPECT_EQ(allocator.stats().device_mallocs, 1);
  allocator.deallocate(a, 512);
  allocator.deallocate(b, 512);  // merges with a
  EXPECT_EQ(allocator.allocate(1024), a);  // best fit: the merged 1 KiB hole, not the segment's tail
  allocator.deallocate(a, 1024);
  allocator.deallocate(c, 512);  // everything free: one whole segment again
  allocator.empty_cache();
  EXPECT_EQ(allocator.stats().reserved_bytes, 0u);
  EXPECT_EQ(state.frees, 1);
}

TEST_F(FakeAllocatorTest, LargeRequestsUseLargeSegments) {
  char* a = static_cast<char*>(allocator.allocate(5 * MiB));
  char* b = static_cast<char*>(allocator.allocate(5 * MiB));
  EXPECT_EQ(b, a + 5 * MiB);  // second one carved from the same 20 MiB segment
  EXPECT_EQ(allocator.stats().reserved_bytes, CachingAllocator::kLargeSegment);
  void* c = allocator.allocate(12 * MiB + 1);  // >= 10 MiB: its own segment, rounded to 2 MiB
  AllocatorStats s = allocator.stats();
  EXPECT_EQ(s.device_mallocs, 2);
  EXPECT_EQ(s.reserved_bytes, CachingAllocator::kLargeSegment + 14 * MiB);
  EXPECT_EQ(s.segments, 2);
  // A small request never takes a large block.
  void* d = allocator.allocate(4096);
  EXPECT_EQ(allocator.stats().device_mallocs, 3);
  for (auto [p, n] : {std::pair<void*, size_t>{a, 5 * MiB}, {b, 5 * MiB}, {c, 12 * MiB + 1}, {d, 4096}})
    allocator.deallocate(p, n);
  EXPECT_EQ(allocator.stats().active_blocks, 0);
}

TEST_F(FakeAllocatorTest, BlocksStayWithTheirStream) {
  state.stream = fake_stream(1);
  void* a = allocator.allocate(4096);
  allocator.deallocate(a, 4096);
  state.stream = fake_stream(2);
  void* b = allocator.allocate(4096);
  EXPECT_NE(b, a);  // another stream's cached block is not handed out
  EXPECT_EQ(allocator.stats().device_mallocs, 2);
  state.stream = fake_stream(1);
  EXPECT_EQ(allocator.allocate(4096), a);
}

TEST_F(FakeAllocatorTest, RecordStreamDelaysReuseUntilThatStreamIsDone) {
  state.stream = fake_stream(1);
  void* a = allocator.allocate(4096);
  allocator.record_stream(a, fake_stream(2));
  allocator.deallocate(a, 4096);
  EXPECT_EQ(allocator.stats().allocated_bytes, 0u);
  void* b = allocator.allocate(4096);
  EXPECT_NE(b, a);  // stream 2 may still be using a
  allocator.deallocate(b, 4096);
  finish(state, fake_stream(2));
  void* c = allocator.allocate(4096);
  EXPECT_EQ(c, a);  // back in the cache, merged with its free neighbours
  EXPECT_EQ(allocator.stats().device_mallocs, 1);
  allocator.deallocate(c, 4096);
}

TEST_F(FakeAllocatorTest, OutOfMemoryReleasesTheCacheAndRetriesOnce) {
  state.capacity = 64 * MiB;
  void* a = allocator.allocate(40 * MiB);
  allocator.deallocate(a, 40 * MiB);  // cached, still held from the device
  void* b = allocator.allocate(50 * MiB);  // does not fit next to the cached 40 MiB
  ASSERT_NE(b, nullptr);
  AllocatorStats s = allocator.stats();
  EXPECT_EQ(s.cache_flushes, 1);
  EXPECT_EQ(s.device_frees, 1);
  EXPECT_EQ(s.reserved_bytes, 50 * MiB);
  EXPECT_GE(state.syncs, 1);  // queued work finished before memory went back
  allocator.deallocate(b, 50 * MiB);
}

TEST_F(FakeAllocatorTest, OutOfMemoryErrorSaysAskedHeldAndFree) {
  state.capacity = 64 * MiB;
  void* held = allocator.allocate(30 * MiB);
  try {
    allocator.allocate(40 * MiB);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("CUDA out of memory on cuda:0"), std::string::npos) << message;
    EXPECT_NE(message.find("asked for 40.00 MiB"), std::string::npos) << message;
    EXPECT_NE(message.find("holds 30.00 MiB"), std::string::npos) << message;
    EXPECT_NE(message.find("34.00 MiB (35651584 bytes) free of 64.00 MiB"), std::string::npos) << message;
  }
  EXPECT_EQ(allocator.stats().out_of_memory_errors, 1);
  allocator.deallocate(held, 30 * MiB);
}

TEST_F(FakeAllocatorTest, MemoryLimitCapsReservedBytes) {
  allocator.set_memory_limit(8 * MiB);
  void* small = allocator.allocate(1000);
  try {
    allocator.allocate(10 * MiB);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("capped at 8.00 MiB"), std::string::npos) << e.what();
  }
  allocator.deallocate(small, 1000);
  allocator.set_memory_limit(0);
  void* big = allocator.allocate(10 * MiB);
  allocator.deallocate(big, 10 * MiB);
}

TEST_F(FakeAllocatorTest, PeakStatisticsAndReset) {
  void* a = allocator.allocate(3 * MiB);
  void* b = allocator.allocate(2 * MiB);
  allocator.deallocate(a, 3 * MiB);
  AllocatorStats s = allocator.stats();
  EXPECT_EQ(s.allocated_bytes, 2 * MiB);
  EXPECT_EQ(s.peak_allocated_bytes, 5 * MiB);
  EXPECT_EQ(s.peak_reserved_bytes, s.reserved_bytes);
  allocator.reset_peak_stats();
  EXPECT_EQ(allocator.stats().peak_allocated_bytes, 2 * MiB);
  allocator.deallocate(b, 2 * MiB);
}

TEST_F(FakeAllocatorTest, EmptyCacheKeepsSegmentsInUse) {
  void* a = allocator.allocate(1000);
  void* b = allocator.allocate(1000);
  void* big = allocator.allocate(16 * MiB);
  allocator.deallocate(a, 1000);
  allocator.deallocate(big, 16 * MiB);
  allocator.empty_cache();
  AllocatorStats s = allocator.stats();
  EXPECT_EQ(s.segments, 1);  // b's segment stays
  EXPECT_EQ(s.reserved_bytes, CachingAllocator::kSmallSegment);
  allocator.deallocate(b, 1000);
  allocator.empty_cache();
  EXPECT_EQ(allocator.stats().reserved_bytes, 0u);
  EXPECT_EQ(state.used, 0u);
}

TEST_F(FakeAllocatorTest, WithoutCachingEveryBlockIsItsOwnAllocation) {
  allocator.set_caching(false);
  void* a = allocator.allocate(1000);
  void* b = allocator.allocate(1000);
  EXPECT_EQ(state.live.at(a), 1024u);  // exactly the rounded size: no neighbours to hide overruns in
  allocator.deallocate(a, 1000);
  EXPECT_EQ(state.frees, 1);  // straight back to the driver
  allocator.deallocate(b, 1000);
  EXPECT_EQ(allocator.stats().reserved_bytes, 0u);
  EXPECT_EQ(state.mallocs, 2);
}

TEST_F(FakeAllocatorTest, PoisonFillsHandedOutBlocks) {
  allocator.set_poison_on_allocate(true);
  auto* p = static_cast<unsigned char*>(allocator.allocate(100));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p[i], 0xFF);
  allocator.deallocate(p, 100);
}

TEST_F(FakeAllocatorTest, FreeingAnUnknownPointerIsReportedNotFatal) {
  int local = 0;
  allocator.deallocate(&local, 4);  // prints a warning
  EXPECT_EQ(allocator.stats().active_blocks, 0);
  EXPECT_THROW(allocator.record_stream(&local, fake_stream(3)), Error);
}

// The real allocator on the GPU.
class GpuAllocatorTest : public testing::CudaTest {};

TEST_F(GpuAllocatorTest, SteadyStateReusesWithoutCudaMalloc) {
  CachingAllocator& allocator = caching_allocator(0);
  allocator.empty_cache();  // so that the first block is the best fit every round
  void* first = nullptr;
  {
    Tensor t = empty({1 << 20}, DType::f32, testing::gpu());
    first = t.raw_data();
  }
  const AllocatorStats before = allocator.stats();
  for (int i = 0; i < 100; ++i) {
    Tensor t = empty({1 << 20}, DType::f32, testing::gpu());
    EXPECT_EQ(t.raw_data(), first);
    Tensor u = ops::add(t.fill_(1.0), t);  // a second live block, freed each round
  }
  const AllocatorStats after = allocator.stats();
  EXPECT_EQ(after.device_mallocs, before.device_mallocs);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
}

TEST_F(GpuAllocatorTest, StatisticsFollowTensors) {
  CachingAllocator& allocator = caching_allocator(0);
  allocator.reset_peak_stats();
  const AllocatorStats before = allocator.stats();
  {
    Tensor t = empty({1000}, DType::f32, testing::gpu());  // 4000 bytes -> 4096
    const AllocatorStats during = allocator.stats();
    EXPECT_EQ(during.allocated_bytes, before.allocated_bytes + 4096);
    EXPECT_EQ(during.requested_bytes, before.requested_bytes + 4000);
    EXPECT_EQ(during.active_blocks, before.active_blocks + 1);
    EXPECT_GE(during.reserved_bytes, during.allocated_bytes);
  }
  const AllocatorStats after = allocator.stats();
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_GE(after.peak_allocated_bytes, before.allocated_bytes + 4096);
}

TEST_F(GpuAllocatorTest, OutOfMemoryNamesAskedHeldAndFree) {
  try {
    empty({int64_t{1} << 50}, DType::u8, testing::gpu());  // a petabyte
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("CUDA out of memory on cuda:0: asked for"), std::string::npos) << message;
    EXPECT_NE(message.find("this process holds"), std::string::npos) << message;
    EXPECT_NE(message.find("free of"), std::string::npos) << message;
  }
  // The device is still usable afterwards.
  EXPECT_EQ(ops::sum(ones({4}, DType::f32, testing::gpu())).item<float>(), 4.0f);
}

TEST_F(GpuAllocatorTest, RetriesAfterReleasingTheCache) {
  CachingAllocator& allocator = caching_allocator(0);
  allocator.empty_cache();
  const size_t held = allocator.stats().reserved_bytes;
  allocator.set_memory_limit(held + 96 * MiB);
  { Tensor a = empty({int64_t{64} * static_cast<int64_t>(MiB)}, DType::u8, testing::gpu()); }  // cached
  const int64_t flushes = allocator.stats().cache_flushes;
  Tensor b = empty({int64_t{80} * static_cast<int64_t>(MiB)}, DType::u8, testing::gpu());  // needs the cache back
  EXPECT_EQ(allocator.stats().cache_flushes, flushes + 1);
  EXPECT_EQ(b.fill_(7.0).narrow(0, b.numel() - 1, 1).item<uint8_t>(), 7);
  allocator.set_memory_limit(0);
}

TEST_F(GpuAllocatorTest, BlockUsedOnAnotherStreamWaitsForIt) {
  CachingAllocator& allocator = caching_allocator(0);
  allocator.empty_cache();  // so that the blocks below come from one fresh segment
  const int64_t oom_before = allocator.stats().out_of_memory_errors;  // the counter spans the whole process
  const Stream side = Stream::create(0);
  Tensor t = empty({1 << 20}, DType::f32, testing::gpu());
  void* p = t.raw_data();
  busy_wait(side, 200000);  // the side stream stays busy for ~0.2 s
  record_stream(t, side);
  t = Tensor();
  Tensor u = empty({1 << 20}, DType::f32, testing::gpu());
  EXPECT_NE(u.raw_data(), p);  // not reused while the side stream may still touch it
  {
    StreamGuard on_side(side);  // nor handed to another stream
    Tensor v = empty({1 << 20}, DType::f32, testing::gpu());
    EXPECT_NE(v.raw_data(), p);
    record_stream(v, Stream::default_stream(0));
  }
  side.synchronize();
  u = Tensor();
  Tensor w = empty({1 << 20}, DType::f32, testing::gpu());
  EXPECT_EQ(w.raw_data(), p);  // the side stream is done: the block is back
  EXPECT_EQ(allocator.stats().out_of_memory_errors, oom_before);
}

}  // namespace
}  // namespace dcae::cuda
#endif
