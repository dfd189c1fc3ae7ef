// CUDA graphs: a captured sequence of ops replayed on new data equals eager runs, replays allocate nothing and the
// graph's private pool never serves ordinary requests, a forward+backward+update training step replayed three times
// equals three eager steps bit for bit, and operations that cannot be captured fail with an error naming them.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "ops/conv2d.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/caching_allocator.h"
#include "core/tensor/cuda/cuda_graph.h"
#endif

namespace dcae {
namespace {

using testing::all_close;
using testing::expect_error;
using testing::gpu;
using testing::random_tensor;

class CudaGraphTest : public testing::CudaTest {};

#ifdef DCAE_WITH_CUDA

// The DC-AE op families in miniature: 3x3 conv, RMSNorm, SiLU, a linear layer and a residual add.
struct SmallNet {
  Tensor conv_w, conv_b, norm_w, norm_b, lin_w, lin_b;

  explicit SmallNet(DType dtype, uint64_t seed) {
    conv_w = random_tensor({32, 16, 3, 3}, seed, dtype, 0.2).to(gpu());
    conv_b = random_tensor({32}, seed + 1, dtype, 0.1).to(gpu());
    norm_w = random_tensor({32}, seed + 2, dtype).to(gpu());
    norm_b = random_tensor({32}, seed + 3, dtype, 0.1).to(gpu());
    lin_w = random_tensor({16, 32}, seed + 4, dtype, 0.2).to(gpu());
    lin_b = random_tensor({16}, seed + 5, dtype, 0.1).to(gpu());
  }
  std::vector<Tensor> parameters() const { return {conv_w, conv_b, norm_w, norm_b, lin_w, lin_b}; }

  Tensor forward(const Tensor& x) const {
    Tensor h = ops::conv2d(x, conv_w, conv_b, {1, 1, 1});
    h = ops::silu(ops::rms_norm(h, norm_w, norm_b));
    return ops::add(ops::linear(h, lin_w, lin_b), x);
  }
};

TEST_F(CudaGraphTest, ReplayOnNewInputsEqualsEager) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const SmallNet net(dtype, 11);
    autograd::NoGradGuard no_grad;
    Tensor static_input = random_tensor({4, 12, 10, 16}, 1, dtype).to(gpu());
    const Tensor warm = net.forward(static_input);  // picks algorithms and fills plan caches before the capture

    cuda::CudaGraph graph;
    Tensor static_output;
    graph.capture([&] { static_output = net.forward(static_input); });
    EXPECT_GT(graph.node_count(), 3);
    for (uint64_t seed : {2, 3, 4}) {
      const Tensor fresh = random_tensor({4, 12, 10, 16}, seed, dtype).to(gpu());
      static_input.copy_(fresh);
      graph.replay();
      const Tensor eager = net.forward(fresh);
      EXPECT_TRUE(all_close(static_output.to(Device::cpu()), eager.to(Device::cpu()), 0, 0)) << "input seed " << seed;
    }
  }
}

TEST_F(CudaGraphTest, ReplaysAllocateNothingAndThePoolStaysPrivate) {
  cuda::CachingAllocator& allocator = cuda::caching_allocator(0);
  const SmallNet net(DType::f32, 21);
  autograd::NoGradGuard no_grad;
  const Tensor static_input = random_tensor({4, 12, 10, 16}, 5, DType::f32).to(gpu());
  net.forward(static_input);

  auto graph = std::make_unique<cuda::CudaGraph>();
  Tensor static_output;
  void* scratch_address = nullptr;  // a block the capture used and freed
  graph->capture([&] {
    Tensor scratch = empty({1 << 18}, DType::f32, gpu());
    scratch.fill_(1.0);
    scratch_address = scratch.raw_data();
    static_output = net.forward(static_input);
  });
  ASSERT_NE(scratch_address, nullptr);
  const uint64_t pool = graph->pool();
  EXPECT_GT(graph->pool_bytes(), size_t{1} << 20);

  const cuda::AllocatorStats before = allocator.stats();
  for (int i = 0; i < 5; ++i) graph->replay();
  cuda::current_stream(0).synchronize();
  const cuda::AllocatorStats after = allocator.stats();
  EXPECT_EQ(after.device_mallocs, before.device_mallocs);
  EXPECT_EQ(after.allocations, before.allocations);
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);

  // The scratch block is free but belongs to the graph: an ordinary request of the same size gets other memory.
  const Tensor ordinary = empty({1 << 18}, DType::f32, gpu());
  EXPECT_NE(ordinary.raw_data(), scratch_address);
  EXPECT_EQ(allocator.pool_reserved_bytes(pool), graph->pool_bytes());

  // Once the graph is gone its free blocks rejoin the ordinary cache; live outputs rejoin it when freed.
  graph.reset();
  static_output = Tensor();
  EXPECT_EQ(allocator.pool_reserved_bytes(pool), 0u);
}

// One training step: forward, L2 loss, backward, and a plain gradient step on every parameter.
void train_step(const SmallNet& net, const Tensor& x, double lr) {
  for (const Tensor& p : net.parameters()) p.set_grad(Tensor());
  const Tensor loss = ops::mean(ops::square(net.forward(x)));
  autograd::backward(loss);
  autograd::NoGradGuard no_grad;
  for (const Tensor& p : net.parameters()) Tensor(p).add_(p.grad(), -lr);
}

TEST_F(CudaGraphTest, TrainingStepReplayedThreeTimesEqualsThreeEagerSteps) {
  const double lr = 0.05;
  SmallNet eager_net(DType::f32, 31), graphed_net(DType::f32, 31);
  for (const Tensor& p : eager_net.parameters()) Tensor(p).set_requires_grad(true);
  for (const Tensor& p : graphed_net.parameters()) Tensor(p).set_requires_grad(true);
  const Tensor x = random_tensor({4, 12, 10, 16}, 7, DType::f32).to(gpu());
  for (int i = 0; i < 3; ++i) train_step(eager_net, x, lr);

  // Warm up on the graphed copy, then restore its starting weights.
  std::vector<Tensor> start;
  for (const Tensor& p : graphed_net.parameters()) start.push_back(p.detach().clone());
  train_step(graphed_net, x, lr);
  for (size_t i = 0; i < start.size(); ++i) graphed_net.parameters()[i].detach().copy_(start[i]);

  cuda::CudaGraph graph;
  graph.capture([&] { train_step(graphed_net, x, lr); });
  for (int i = 0; i < 3; ++i) graph.replay();
  const auto eager_params = eager_net.parameters(), graphed_params = graphed_net.parameters();
  for (size_t i = 0; i < eager_params.size(); ++i) {
    EXPECT_TRUE(all_close(graphed_params[i].to(Device::cpu()), eager_params[i].to(Device::cpu()), 0, 0))
        << "parameter " << i;
    EXPECT_FALSE(all_close(graphed_params[i].to(Device::cpu()), start[i].to(Device::cpu()), 0, 0))
        << "parameter " << i << " never changed";
  }
}

TEST_F(CudaGraphTest, OperationsThatCannotBeCapturedAreNamed) {
  const Tensor x = random_tensor({64}, 9, DType::f32).to(gpu());
  {
    cuda::CudaGraph graph;
    expect_error([&] { graph.capture([&] { ops::sum(x).item<double>(); }); },
                 {"while capturing a CUDA graph", "a copy from the GPU to host memory", "is not allowed"});
    EXPECT_FALSE(graph.captured());
  }
  {
    cuda::CudaGraph graph;
    expect_error([&] { graph.capture([&] { ops::add(x, 1.0).to(Device::cpu()); }); }, "a copy from the GPU to host");
  }
  {
    cuda::CudaGraph graph;
    const Tensor host = random_tensor({64}, 10, DType::f32);
    expect_error([&] { graph.capture([&] { x.detach().copy_(host); }); }, "a copy from host memory to the GPU");
  }
  {
    cuda::CudaGraph graph;
    expect_error([&] { graph.capture([&] { cuda::current_stream(0).synchronize(); }); }, "Stream::synchronize");
  }
  {
    cuda::CudaGraph graph;
    expect_error([&] { graph.replay(); }, "nothing was captured");
    graph.capture([&] { ops::add(x, 1.0); });
    expect_error([&] { graph.capture([&] { ops::add(x, 1.0); }); }, "already holds a capture");
    expect_error([&] {
      cuda::CudaGraph inner;
      cuda::CudaGraph outer;
      outer.capture([&] { inner.capture([&] {}); });
    }, "do not nest");
  }
  // The device is still usable after the failed captures.
  EXPECT_TRUE(all_close(ops::add(x, 1.0).to(Device::cpu()), ops::add(x.to(Device::cpu()), 1.0), 0, 0));
}

#else
TEST_F(CudaGraphTest, NeedsCuda) {}
#endif

}  // namespace
}  // namespace dcae
