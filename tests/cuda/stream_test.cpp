// Streams, events, guards and error reporting of CUDA calls.
#include <gtest/gtest.h>

#include <string>

#include "tests/cuda/cuda_test_util.h"

#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/stream.h"

namespace dcae::cuda {
namespace {

// No GPU needed: a failing status is reported with the call's text.
TEST(CudaCheck, ErrorsNameTheCall) {
  try {
    DCAE_CUDA_CHECK(2);  // cudaErrorMemoryAllocation
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("2 failed: out of memory"), std::string::npos) << message;
    EXPECT_NE(message.find("cudaErrorMemoryAllocation"), std::string::npos) << message;
  }
  EXPECT_NO_THROW(DCAE_CUDA_CHECK(0));
  try {
    check_device(device_count() + 3);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

class StreamTest : public testing::CudaTest {};

TEST_F(StreamTest, CurrentStreamDefaultsAndGuardRestores) {
  EXPECT_TRUE(current_stream(0).is_default());
  const Stream side = Stream::create(0);
  EXPECT_FALSE(side.is_default());
  EXPECT_NE(side, Stream::default_stream(0));
  {
    StreamGuard guard(side);
    EXPECT_EQ(current_stream(0), side);
    EXPECT_EQ(current_device(), 0);
    const Stream other = Stream::create(0);
    {
      StreamGuard inner(other);
      EXPECT_EQ(current_stream(0), other);
    }
    EXPECT_EQ(current_stream(0), side);
  }
  EXPECT_TRUE(current_stream(0).is_default());
}

TEST_F(StreamTest, EventsOrderWorkAcrossStreams) {
  const Stream producer = Stream::create(0), consumer = Stream::create(0);
  busy_wait(producer, 100000);
  Event produced;
  EXPECT_FALSE(produced.recorded());
  EXPECT_TRUE(produced.query());  // nothing recorded: nothing to wait for
  produced.record(producer);
  EXPECT_FALSE(produced.query());
  consumer.wait(produced);
  {
    StreamGuard guard(consumer);
    Tensor t = ones({16}, DType::f32, testing::gpu());  // queued behind the wait
    EXPECT_FALSE(consumer.query());
    consumer.synchronize();
    EXPECT_TRUE(produced.query());
    EXPECT_TRUE(consumer.query());
    EXPECT_EQ(ops::sum(t).item<float>(), 16.0f);
  }
}

TEST_F(StreamTest, TimingEventsMeasureElapsedTime) {
  const Stream stream = Stream::create(0);
  Event start(/*timing=*/true), stop(/*timing=*/true);
  start.record(stream);
  busy_wait(stream, 20000);
  stop.record(stream);
  stop.synchronize();
  EXPECT_GE(start.elapsed_ms(stop), 15.0f);
  Event untimed;
  untimed.record(stream);
  EXPECT_THROW(start.elapsed_ms(untimed), Error);
  Event moved = std::move(start);
  EXPECT_TRUE(moved.recorded());
  EXPECT_FALSE(start.recorded());
}

TEST_F(StreamTest, OpsRunOnTheCurrentStream) {
  const Tensor a = testing::random_tensor({1000}, 1, DType::f32), b = testing::random_tensor({1000}, 2, DType::f32);
  // Uploads block the host while their stream is busy, so they go first; the side stream does not synchronise
  // with the default one, so wait for them explicitly.
  const Tensor a_gpu = a.to(testing::gpu()), b_gpu = b.to(testing::gpu());
  Stream::default_stream(0).synchronize();
  const Stream side = Stream::create(0);
  Tensor sum_on_side;
  {
    StreamGuard guard(side);
    busy_wait(side, 50000);
    sum_on_side = ops::add(a_gpu, b_gpu);
    EXPECT_FALSE(side.query());  // the add is queued behind the busy kernel
    side.synchronize();
  }
  EXPECT_TRUE(testing::gpu_equals_cpu(sum_on_side, ops::add(a, b)));
}

}  // namespace
}  // namespace dcae::cuda
#endif
