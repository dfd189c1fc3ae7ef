// FSDP on the DC-AE itself: the Encoder/Decoder call their stages through nn::Layer::operator(), so stage units
// ("encoder.down_blocks.*", "decoder.up_blocks.*") get the per-unit schedule from their forward hooks without any
// wrap(): gathered before their forward, freed after it, gathered again for backward, reduce-scattered, and frozen
// stages below the first trainable layer run without recording. Training equals one process on the global batch.
#include "core/autograd/grad_mode.h"
#include "dist/fsdp.h"
#include "nn/dcae/model.h"
#ifdef DCAE_WITH_NCCL
#include "core/tensor/cuda/stream.h"
#include "dist/cuda/nccl_communicator.h"
#endif
#include "tests/dist/dist_testing.h"
#include "tests/testing/tiny_dcae.h"

namespace dcae::dist {
namespace {

using nn::dcae_model::AutoencoderDC;
using nn::dcae_model::DcaeConfig;
using testing::all_close;
using testing::world_comm;

constexpr int kSteps = 2;
constexpr int64_t kBatch = 4;  // 2 images per rank on 2 ranks
const std::vector<std::string> kStageUnits = {"encoder.down_blocks.*", "decoder.up_blocks.*"};

// Three stages (ResBlock, EfficientViT, EfficientViT), f8, RMSNorm only (BatchNorm statistics would see each
// rank's half of the batch and differ from one process).
DcaeConfig tiny_config() {
  return dcae::testing::tiny_dcae_config({{"ResBlock", 8, 1, "rms_norm", "silu"},
                                    {"EfficientViTBlock", 8, 1, "rms_norm", "silu"},
                                    {"EfficientViTBlock", 16, 1, "rms_norm", "silu", {5}}});
}

std::unique_ptr<AutoencoderDC> make_model(uint64_t seed) {
  Generator generator(seed);
  nn::InitOptions init{&generator};
  return std::make_unique<AutoencoderDC>(tiny_config(), init);
}

std::vector<Tensor> make_images() {
  std::vector<Tensor> out;
  for (int s = 0; s < kSteps; ++s) out.push_back(testing::random_tensor({kBatch, 8, 8, 3}, 900 + s, DType::f32));
  return out;
}

Tensor reconstruction_loss(AutoencoderDC& model, const Tensor& images) {
  return ops::mse_loss(model.decode(model.encode(images)), images);
}

std::vector<nn::NamedTensor> reference_training(const std::vector<Tensor>& images,
                                                const std::vector<std::string>& trainable) {
  auto model = make_model(21);
  if (!trainable.empty()) model->train_only(trainable);
  testing::TestSgd optim;
  for (const Tensor& batch : images) {
    testing::TestAdamW::zero_grad(model->parameters());
    autograd::backward(reconstruction_loss(*model, batch));
    optim.step(model->trainable_parameters());
  }
  std::vector<nn::NamedTensor> out;
  for (const auto& [name, p] : model->named_parameters()) out.emplace_back(name, p.detach().clone());
  return out;
}

const FullyShardedModel::UnitInfo& unit_named(const std::vector<FullyShardedModel::UnitInfo>& units,
                                              const std::string& name) {
  for (const auto& unit : units)
    if (unit.name == name) return unit;
  throw Error("no unit " + name);
}

struct DcaeFsdpRun {
  std::vector<nn::NamedTensor> full;
  std::vector<FullyShardedModel::UnitInfo> units;
  std::vector<FullyShardedModel::UnitInfo> units_after_first_forward;  // before its backward
  int64_t gathered_after_first_forward = 0, full_bytes = 0;
  MemoryStats memory;
};

DcaeFsdpRun fsdp_training(const std::vector<Tensor>& images, const std::vector<std::string>& trainable) {
  auto comm = world_comm();
  const int rank = comm->rank(), world = comm->size();
  auto model = make_model(21 + static_cast<uint64_t>(rank));  // rank 0's weights are broadcast
  if (!trainable.empty()) model->train_only(trainable);
  DcaeFsdpRun run;
  for (const Tensor& p : model->parameters()) run.full_bytes += static_cast<int64_t>(p.nbytes());
  FullyShardedModel fsdp(*model, comm, {.units = kStageUnits});
  testing::TestSgd optim;
  for (size_t s = 0; s < images.size(); ++s) {
    const std::vector<Tensor> shards = testing::values(fsdp.trainable_shards());
    testing::TestAdamW::zero_grad(shards);
    const Tensor local = testing::local_rows(images[s], rank, world);
    Tensor loss = fsdp.forward([&] { return reconstruction_loss(*model, local); });
    if (s == 0) {
      run.units_after_first_forward = fsdp.units();
      run.gathered_after_first_forward = fsdp.memory().gathered_parameters;
    }
    autograd::backward(loss);
    optim.step(shards);
  }
  run.full = fsdp.gather_full_parameters();
  run.units = fsdp.units();
  run.memory = fsdp.memory();
  return run;
}

void expect_same_parameters(const std::vector<nn::NamedTensor>& actual, const std::vector<nn::NamedTensor>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_EQ(actual[i].first, expected[i].first);
    EXPECT_TRUE(all_close(actual[i].second, expected[i].second, 1e-5, 1e-4)) << actual[i].first;
  }
}

TEST(FsdpDcae, StageUnitsGetThePerUnitScheduleFromForwardHooksAndTrainLikeOneProcess) {
  const auto images = make_images();
  const auto expected = reference_training(images, {});
  DcaeFsdpRun run = fsdp_training(images, {});
  expect_same_parameters(run.full, expected);

  ASSERT_EQ(run.units.size(), 7u);  // <root> (stems, heads) + 3 encoder + 3 decoder stages
  for (const char* side : {"encoder.down_blocks.", "decoder.up_blocks."}) {
    for (int i = 0; i < 3; ++i) {
      const std::string name = side + std::to_string(i);
      SCOPED_TRACE(name);
      const auto& unit = unit_named(run.units, name);
      EXPECT_TRUE(unit.wrapped);  // driven by its forward hook
      EXPECT_EQ(unit.forward_gathers, kSteps);
      EXPECT_EQ(unit.backward_gathers, kSteps);  // freed after forward, gathered again for backward
      EXPECT_EQ(unit.reduce_scatters, kSteps);
      EXPECT_EQ(unit.forwards_without_backward, 0);
      EXPECT_FALSE(unit.gathered);
      // Between the first forward and its backward every stage was already resharded; only the root stays.
      EXPECT_FALSE(unit_named(run.units_after_first_forward, name).gathered);
    }
  }
  EXPECT_TRUE(unit_named(run.units_after_first_forward, "<root>").gathered);
  EXPECT_FALSE(unit_named(run.units, "<root>").wrapped);
  EXPECT_GT(run.gathered_after_first_forward, 0);
  EXPECT_LT(run.gathered_after_first_forward, run.full_bytes / 2);  // far from the whole model
  EXPECT_EQ(run.memory.gathered_parameters, 0);
  EXPECT_EQ(run.memory.communication_buffers, 0);
}

// Phase 2 on the DC-AE: only the innermost stages train (encoder stage 2 and decoder stage 2, which the decoder
// runs first). Encoder stages 0 and 1 are frozen below the first trainable layer: no recording, no backward
// gather. Decoder stages 1 and 0 are frozen above it: gathered again for the input gradient, never reduced.
TEST(FsdpDcae, Phase2FrozenStagesRunWithoutBackwardOrStayBitIdentical) {
  const auto images = make_images();
  const std::vector<std::string> trainable = {"encoder.down_blocks.2.*", "encoder.conv_out.*", "decoder.conv_in.*",
                                              "decoder.up_blocks.2.*"};
  const auto expected = reference_training(images, trainable);
  const auto initial = make_model(21);
  DcaeFsdpRun run = fsdp_training(images, trainable);
  expect_same_parameters(run.full, expected);
  for (const auto& [name, value] : run.full) {
    bool trains = false;
    for (const std::string& glob : trainable) trains = trains || nn::glob_match(glob, name);
    if (!trains) {
      EXPECT_TRUE(all_close(value, initial->parameter(name), 0, 0)) << name << " changed";
    }
  }
  for (const char* name : {"encoder.down_blocks.0", "encoder.down_blocks.1"}) {
    const auto& unit = unit_named(run.units, name);
    EXPECT_EQ(unit.forwards_without_backward, kSteps) << name;
    EXPECT_EQ(unit.backward_gathers, 0) << name;
    EXPECT_EQ(unit.reduce_scatters, 0) << name;
  }
  for (const char* name : {"decoder.up_blocks.1", "decoder.up_blocks.0"}) {
    const auto& unit = unit_named(run.units, name);
    EXPECT_EQ(unit.forwards_without_backward, 0) << name;
    EXPECT_EQ(unit.backward_gathers, kSteps) << name;
    EXPECT_EQ(unit.reduce_scatters, 0) << name;
  }
  for (const char* name : {"encoder.down_blocks.2", "decoder.up_blocks.2"})
    EXPECT_EQ(unit_named(run.units, name).reduce_scatters, kSteps) << name;
  EXPECT_EQ(run.memory.gathered_parameters, 0);
}

// Finer units: every block inside the decoder's stages (called through nn::Sequential's hook point).
TEST(FsdpDcae, BlockUnitsInsideStagesAreDrivenByTheirHooksToo) {
  auto comm = world_comm();
  const int rank = comm->rank(), world = comm->size();
  auto model = make_model(21);
  FullyShardedModel fsdp(*model, comm, {.units = {"decoder.up_blocks.*.*"}});
  const Tensor images = testing::local_rows(make_images().front(), rank, world);
  autograd::backward(fsdp.forward([&] { return reconstruction_loss(*model, images); }));
  int64_t blocks = 0;
  for (const auto& unit : fsdp.units()) {
    if (unit.name == "<root>") continue;
    ++blocks;
    EXPECT_EQ(unit.name.rfind("decoder.up_blocks.", 0), 0u) << unit.name;
    EXPECT_TRUE(unit.wrapped) << unit.name;
    EXPECT_EQ(unit.backward_gathers, 1) << unit.name;
    EXPECT_EQ(unit.reduce_scatters, 1) << unit.name;
  }
  EXPECT_EQ(blocks, 5);  // stages 0 and 1: UpBlock + one block each; stage 2: one block
}

TEST(FsdpDcae, HooksAreRemovedWithTheShardedModelAndRefuseASecondOwner) {
  auto comm = world_comm();
  auto model = make_model(21);
  {
    FullyShardedModel fsdp(*model, comm, {.units = kStageUnits});
    const Tensor x = testing::random_tensor({1, 8, 8, 8}, 5, DType::f32);
    // Called outside forward(), a hooked stage says so instead of running on empty parameters.
    nn::Layer* stage = nullptr;
    for (const auto& [name, module] : model->named_modules())
      if (name == "encoder.down_blocks.0") stage = dynamic_cast<nn::Layer*>(module);
    ASSERT_NE(stage, nullptr);
    try {
      (*stage)(x);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("outside FullyShardedModel::forward"), std::string::npos) << e.what();
    }
    try {
      FullyShardedModel second(*model, comm, {.units = kStageUnits, .broadcast_parameters = false});
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("already has a forward interceptor"), std::string::npos) << e.what();
    }
  }
  for (const auto& [name, module] : model->named_modules())
    if (auto* layer = dynamic_cast<nn::Layer*>(module)) {
      EXPECT_FALSE(layer->has_forward_interceptor()) << name;
    }
}

#ifdef DCAE_WITH_NCCL
// The same schedule on GPUs over NCCL (one GPU per rank: `mpirun -np 2` on a 2-GPU machine, or one process on one
// GPU): all-gathers, reduce-scatters and the grad-norm all-reduce on CUDA tensors, plain SGD on the shards through
// ops, against one CPU process on the whole batch (loose tolerance: GPU convolutions may round differently).
void sgd_step(const std::vector<Tensor>& params, double lr) {
  autograd::NoGradGuard no_grad;
  for (const Tensor& p : params)
    if (p.grad().defined()) Tensor(p.detach()).add_(p.grad(), -lr);
}

TEST(FsdpDcae, OnGpusOverNcclTrainsLikeOneProcess) {
  const DistContext& ctx = context();
  if (!cuda_available() || cuda::device_count() < ctx.local_rank + 1) GTEST_SKIP() << "needs one GPU per rank";
  const int gpu = bind_local_gpu(ctx);
  auto comm = std::make_shared<NcclCommunicator>(*world(), gpu);
  const Device device = Device::cuda(gpu);
  const int rank = comm->rank(), world_size = comm->size();
  const auto images = make_images();
  constexpr double kLr = 0.05;

  auto reference = make_model(21);
  for (const Tensor& batch : images) {
    testing::TestAdamW::zero_grad(reference->parameters());
    autograd::backward(reconstruction_loss(*reference, batch));
    sgd_step(reference->parameters(), kLr);
  }
  double reference_norm = 0.0;
  {
    testing::TestAdamW::zero_grad(reference->parameters());
    autograd::backward(reconstruction_loss(*reference, images.front()));
    for (const Tensor& p : reference->parameters())
      for (double g : p.grad().to_vector<double>()) reference_norm += g * g;
    reference_norm = std::sqrt(reference_norm);
  }

  auto model = make_model(21 + static_cast<uint64_t>(rank));
  model->to(device);
  FullyShardedModel fsdp(*model, comm, {.units = kStageUnits});
  const std::vector<Tensor> shards = testing::values(fsdp.trainable_shards());
  for (const Tensor& batch : images) {
    testing::TestAdamW::zero_grad(shards);
    const Tensor local = testing::local_rows(batch, rank, world_size).to(device);
    autograd::backward(fsdp.forward([&] { return reconstruction_loss(*model, local); }));
    sgd_step(shards, kLr);
  }
  // The global gradient norm (one more forward/backward on the first batch with the trained weights).
  testing::TestAdamW::zero_grad(shards);
  const Tensor local = testing::local_rows(images.front(), rank, world_size).to(device);
  autograd::backward(fsdp.forward([&] { return reconstruction_loss(*model, local); }));
  EXPECT_NEAR(fsdp.grad_norm(), reference_norm, 2e-2 * reference_norm);

  const auto full = fsdp.gather_full_parameters();
  const auto expected = reference->named_parameters();
  ASSERT_EQ(full.size(), expected.size());
  for (size_t i = 0; i < full.size(); ++i)
    EXPECT_TRUE(all_close(full[i].second.to(Device::cpu()), expected[i].second, 2e-3, 2e-2)) << full[i].first;
  for (const auto& unit : fsdp.units()) {
    if (unit.name == "<root>") continue;
    EXPECT_TRUE(unit.wrapped) << unit.name;
    EXPECT_EQ(unit.reduce_scatters, kSteps + 1) << unit.name;
    EXPECT_FALSE(unit.gathered) << unit.name;
  }
  EXPECT_EQ(fsdp.memory().gathered_parameters, 0);
}
#endif

}  // namespace
}  // namespace dcae::dist
