// DataParallel: training on 2 ranks (each with half of the global batch) gives the parameters of one process
// training on the whole batch; buckets start during backward; accumulation, unused and frozen parameters.
#include "dist/data_parallel.h"

#include "tests/dist/dist_testing.h"

namespace dcae::dist {
namespace {

using testing::all_close;
using testing::random_tensor;
using testing::TestAdamW;
using testing::world_comm;

Tensor loss_of(nn::Layer& net, const Tensor& images, const Tensor& targets) {
  return ops::mse_loss(net.forward(images), targets);
}

TEST(DataParallel, TwoRanksTrainLikeOneProcessOnTheGlobalBatch) {
  auto comm = world_comm();
  const int rank = comm->rank(), world = comm->size();
  const int64_t batch = 12;  // divides evenly over 1, 2, 3 or 4 ranks
  std::vector<Tensor> images, targets;
  for (int s = 0; s < 3; ++s) {
    images.push_back(random_tensor({batch, 6, 6, 3}, 300 + s, DType::f32));
    targets.push_back(random_tensor({batch, 6, 6, 3}, 400 + s, DType::f32));
  }
  // One process, whole batch.
  auto reference = testing::conv_net(7);
  testing::TestSgd reference_optim;
  for (int s = 0; s < 3; ++s) {
    TestAdamW::zero_grad(reference->parameters());
    autograd::backward(loss_of(*reference, images[s], targets[s]));
    reference_optim.step(reference->parameters());
  }
  // Every rank starts from different weights: DataParallel copies rank 0's (seed 7) everywhere.
  auto net = testing::conv_net(7 + static_cast<uint64_t>(rank));
  DataParallel ddp(*net, comm, {.bucket_mb = 0.002});  // ~2 KB buckets: several per backward
  EXPECT_GT(ddp.bucket_layout().size(), 2u);
  testing::TestSgd optim;
  for (int s = 0; s < 3; ++s) {
    TestAdamW::zero_grad(net->parameters());
    autograd::backward(
        loss_of(*net, testing::local_rows(images[s], rank, world), testing::local_rows(targets[s], rank, world)));
    optim.step(net->parameters());
  }
  const auto expected = reference->named_parameters();
  const auto actual = net->named_parameters();
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_TRUE(all_close(actual[i].second, expected[i].second, 2e-5, 1e-4)) << actual[i].first;
  // Buckets start from the gradient-ready hooks, before backward ends (overlap), and all of them every step.
  EXPECT_GT(ddp.buckets_started_during_backward(), 0);
  EXPECT_EQ(ddp.buckets_started(), 3 * static_cast<int64_t>(ddp.bucket_layout().size()));
}

TEST(DataParallel, BucketsCoverEveryTrainableParameterOnceInReverseOrder) {
  auto net = testing::conv_net(3);
  net->set_trainable({"0.bias"}, false);
  DataParallel ddp(*net, world_comm(), {.bucket_mb = 0.001});
  std::vector<std::string> launched;
  for (const auto& bucket : ddp.bucket_layout()) launched.insert(launched.end(), bucket.begin(), bucket.end());
  std::vector<std::string> trainable;
  for (const auto& [name, p] : net->named_parameters())
    if (p.requires_grad()) trainable.insert(trainable.begin(), name);
  EXPECT_EQ(launched, trainable);
  // One bucket holds everything when it is large enough.
  DataParallel single(*net, world_comm(), {.bucket_mb = 25});
  EXPECT_EQ(single.bucket_layout().size(), 1u);
  const MemoryStats memory = single.memory();
  int64_t trainable_bytes = 0, all_bytes = 0;
  for (const Tensor& p : net->parameters()) {
    all_bytes += static_cast<int64_t>(p.nbytes());
    if (p.requires_grad()) trainable_bytes += static_cast<int64_t>(p.nbytes());
  }
  EXPECT_EQ(memory.parameters, all_bytes);
  EXPECT_EQ(memory.communication_buffers, trainable_bytes);
  EXPECT_EQ(memory.gradients, 0);
}

TEST(DataParallel, AccumulatesMicroStepsLocallyAndReducesOnTheLast) {
  auto comm = world_comm();
  const int rank = comm->rank(), world = comm->size();
  Tensor images = random_tensor({24, 4, 4, 3}, 500, DType::f32),
         targets = random_tensor({24, 4, 4, 3}, 501, DType::f32);
  auto reference = testing::conv_net(11);
  autograd::backward(loss_of(*reference, images, targets));

  auto net = testing::conv_net(11);
  DataParallel ddp(*net, comm, {.bucket_mb = 0.004});
  Tensor mine = testing::local_rows(images, rank, world), my_targets = testing::local_rows(targets, rank, world);
  const int64_t half = mine.size(0) / 2;
  for (int micro = 0; micro < 2; ++micro) {
    ddp.set_gradient_sync(micro == 1);
    Tensor loss = loss_of(*net, mine.narrow(0, micro * half, half).contiguous(),
                          my_targets.narrow(0, micro * half, half).contiguous());
    autograd::backward(ops::mul(loss, 0.5));
    if (micro == 0) {
      EXPECT_EQ(ddp.buckets_started(), 0);  // nothing is sent while sync is off
    }
  }
  const auto expected = reference->named_parameters();
  const auto actual = net->named_parameters();
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_TRUE(all_close(actual[i].second.grad(), expected[i].second.grad(), 1e-6, 1e-4)) << actual[i].first;
  EXPECT_GT(ddp.memory().gradients, 0);
}

// A parameter backward never reaches still takes part (zeros), so the ranks stay in step; frozen ones get no hook.
class WithUnused : public nn::Layer {
 public:
  explicit WithUnused(uint64_t seed) {
    Generator generator(seed);
    used = register_module("used", std::make_shared<nn::Linear>(4, 3, true, nn::InitOptions{&generator}));
    unused = register_module("unused", std::make_shared<nn::Linear>(4, 3, true, nn::InitOptions{&generator}));
    frozen = register_module("frozen", std::make_shared<nn::Linear>(3, 3, true, nn::InitOptions{&generator}));
  }
  Tensor forward(const Tensor& x) override { return frozen->forward(used->forward(x)); }
  std::shared_ptr<nn::Linear> used, unused, frozen;
};

TEST(DataParallel, UnusedParametersGetZeroGradientsAndFrozenOnesNone) {
  auto comm = world_comm();
  WithUnused net(21);
  net.set_trainable({"frozen.*"}, false);
  DataParallel ddp(net, comm, {.bucket_mb = 25});
  Tensor x = random_tensor({2, 4}, 600 + static_cast<uint64_t>(comm->rank()), DType::f32);
  for (int step = 0; step < 2; ++step) autograd::backward(ops::sum(net.forward(x)));
  ASSERT_TRUE(net.unused->weight.grad().defined());
  EXPECT_TRUE(all_close(net.unused->weight.grad(), zeros({3, 4}), 0, 0));
  EXPECT_FALSE(net.frozen->weight.grad().defined());
  EXPECT_TRUE(net.used->weight.grad().defined());
}

TEST(DataParallel, ErrorsNameTheProblem) {
  WithUnused net(5);
  net.set_trainable({"*"}, false);
  try {
    DataParallel ddp(net, world_comm());
    ADD_FAILURE() << "a model without trainable parameters was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no trainable parameter"), std::string::npos) << e.what();
  }
  net.set_trainable({"*"}, true);
  EXPECT_THROW(DataParallel(net, world_comm(), {.bucket_mb = 0}), Error);
  EXPECT_THROW(DataParallel(net, nullptr), Error);
}

}  // namespace
}  // namespace dcae::dist
