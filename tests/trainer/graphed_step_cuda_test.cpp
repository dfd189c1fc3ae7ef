// A whole DC-AE training step (forward, L1 loss, backward, gradient norm and clipping, capturable AdamW with fp32
// masters of bf16 weights) captured in a CUDA graph: three replays on new batches with a changing lr equal three
// eager steps bit for bit, replays allocate nothing, and a step that reads the loss on the host, or uses the
// host-scalar AdamW, fails to capture with an error naming the copy. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "core/autograd/engine.h"
#include "nn/dcae/model.h"
#include "ops/loss.h"
#include "ops/view.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/testing/check.h"
#include "tests/testing/tiny_dcae.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/clip.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/caching_allocator.h"
#include "core/tensor/cuda/cuda_graph.h"
#include "trainer/cuda/graphed_step.h"
#endif

namespace dcae::trainer {
namespace {

using dcae::testing::all_close;
using dcae::testing::gpu;
using dcae::testing::random_tensor;
using nn::dcae_model::AutoencoderDC;
using nn::dcae_model::DcaeConfig;

class GraphedTrainStepTest : public dcae::testing::CudaTest {};

#ifdef DCAE_WITH_CUDA

// Three stages (ResBlock, EfficientViT with linear attention, multi-scale attention), RMSNorm decoder.
DcaeConfig tiny() {
  return dcae::testing::tiny_dcae_config({{"ResBlock", 8, 1, "rms_norm", "relu"},
                                    {"EfficientViTBlock", 8, 1, "rms_norm", "silu"},
                                    {"EfficientViTBlock", 16, 1, "rms_norm", "silu", {5}}});
}

// A model in bf16 on the GPU, its capturable AdamW, and a static input batch.
struct Trainee {
  std::unique_ptr<AutoencoderDC> model;
  std::unique_ptr<AdamW> optim;
  Tensor images, loss;

  Trainee() {
    Generator gen(7);
    model = std::make_unique<AutoencoderDC>(tiny(), nn::InitOptions{&gen, DType::f32});
    model->to(gpu());
    model->to(DType::bf16);
    model->train();
    OptimizerConfig config;
    config.lr = 2e-3;
    config.weight_decay = 0.01;
    optim = std::make_unique<AdamW>(build_param_groups(model->named_parameters(), config), config);
    optim->make_capturable();
    images = empty({2, 16, 16, 3}, DType::f32, gpu());
  }
  // The whole step on `images`; `loss` is its output.
  void step() {
    loss = ops::l1_loss(ops::cast(model->forward(ops::cast(images, DType::bf16)), DType::f32), images);
    autograd::backward(loss);
    optim->clip_next_step(grad_norm_tensor(optim->params()), 0.05);  // small enough to clip
    optim->step();
    optim->zero_grad();
  }
};

Tensor batch(int k) { return random_tensor({2, 16, 16, 3}, 900 + k, DType::f32, 0.5).to(gpu()); }

TEST_F(GraphedTrainStepTest, TinyDcaeStepReplayedThreeTimesEqualsThreeEagerSteps) {
  Trainee eager, graphed;
  // Warm-up: one identical eager step each (moments, algorithm choices, plan caches).
  for (Trainee* t : {&eager, &graphed}) {
    t->images.copy_(batch(0));
    t->step();
  }
  std::vector<Tensor> start;
  for (const Tensor& p : graphed.optim->params()) start.push_back(p.to(Device::cpu()));
  GraphedTrainStep step([&] { graphed.step(); }, graphed.optim.get());
  step.capture();
  EXPECT_GT(step.graph().node_count(), 100);

  cuda::CachingAllocator& allocator = cuda::caching_allocator(0);
  const double factors[] = {1.0, 0.5, 0.1};
  for (int k = 1; k <= 3; ++k) {
    const Tensor next = batch(k);
    eager.images.copy_(next);
    eager.optim->set_lr_factor(factors[k - 1]);
    eager.step();
    const double eager_loss = eager.loss.item<double>();

    graphed.images.copy_(next);
    graphed.optim->set_lr_factor(factors[k - 1]);
    cuda::current_stream(0).synchronize();
    const cuda::AllocatorStats before = allocator.stats();
    step.replay();
    cuda::current_stream(0).synchronize();
    const cuda::AllocatorStats after = allocator.stats();
    EXPECT_EQ(after.device_mallocs, before.device_mallocs) << "replay " << k;
    EXPECT_EQ(after.allocations, before.allocations) << "replay " << k;
    EXPECT_EQ(after.reserved_bytes, before.reserved_bytes) << "replay " << k;
    EXPECT_EQ(graphed.loss.item<double>(), eager_loss) << "replay " << k;  // the loss read after the replay
  }
  const std::vector<Tensor> eager_params = eager.optim->params(), graphed_params = graphed.optim->params();
  ASSERT_EQ(eager_params.size(), graphed_params.size());
  size_t moved = 0;
  for (size_t i = 0; i < eager_params.size(); ++i) {
    const Tensor g = graphed_params[i].to(Device::cpu());
    EXPECT_TRUE(all_close(g, eager_params[i].to(Device::cpu()), 0, 0)) << "parameter " << i;
    moved += all_close(g, start[i], 0, 0) ? 0 : 1;
  }
  EXPECT_GT(moved, eager_params.size() / 2) << "the replays did not train";
  for (Trainee* t : {&eager, &graphed}) t->optim->sync_steps_to_host();
  EXPECT_EQ(graphed.optim->state(graphed.optim->named_masters().front().first).step, 4);
}

TEST_F(GraphedTrainStepTest, HostReadsAndHostScalarOptimizerStepsCannotBeCaptured) {
  Trainee t;
  t.images.copy_(batch(0));
  t.step();
  {
    GraphedTrainStep step([&] {
      t.step();
      t.loss.item<double>();  // logging belongs after the replay
    }, t.optim.get());
    dcae::testing::expect_error([&] { step.capture(); },
                                {"while capturing a CUDA graph", "a copy from the GPU to host memory"});
    EXPECT_FALSE(step.captured());
    dcae::testing::expect_error([&] { step.replay(); }, "not captured");
  }
  {
    // The host-scalar AdamW uploads its tensor table each step: a copy from host memory.
    OptimizerConfig config;
    AdamW plain(build_param_groups(t.model->named_parameters(), config), config);
    auto plain_step = [&] {
      autograd::backward(ops::l1_loss(ops::cast(t.model->forward(ops::cast(t.images, DType::bf16)), DType::f32),
                                      t.images));
      plain.step();
      plain.zero_grad();
    };
    plain_step();
    GraphedTrainStep step(plain_step, &plain);
    dcae::testing::expect_error([&] { step.capture(); }, "a copy from host memory to the GPU");
  }
  // The device is still usable: an eager step runs.
  t.step();
  EXPECT_TRUE(std::isfinite(t.loss.item<double>()));
}

#else
TEST_F(GraphedTrainStepTest, NeedsCuda) {}
#endif

}  // namespace
}  // namespace dcae::trainer
