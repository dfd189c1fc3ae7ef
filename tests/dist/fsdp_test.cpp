// FullyShardedModel: 2-rank training equals one process on the global batch (wrapped and eager units, with and
// without prefetch / reshard after forward), frozen units (bit-identical, no gradient or optimizer state, no
// backward below the first trainable layer), bf16 compute, memory accounting and errors.
#include "dist/fsdp.h"

#include "core/autograd/grad_mode.h"
#include "dist/storage_swap.h"
#include "tests/dist/dist_testing.h"

namespace dcae::dist {
namespace {

using testing::all_close;
using testing::Batch;
using testing::TinyNet;
using testing::world_comm;

const std::vector<int64_t> kWidths = {5, 7, 6, 4};  // odd sizes: 7 rows over 2 ranks are 4 + 3, 3 rows 2 + 1
constexpr int kSteps = 3;
constexpr int64_t kBatch = 12;  // divides evenly over 1, 2, 3 or 4 ranks

Tensor mse(const Tensor& prediction, const Tensor& target) { return ops::mse_loss(prediction, target); }

// One process, whole batch, plain SGD: the result FSDP must reproduce.
std::vector<nn::NamedTensor> reference_training(const std::vector<Batch>& batches,
                                                const std::vector<std::string>& trainable,
                                                double* first_grad_norm = nullptr) {
  TinyNet net(kWidths, 5);
  if (!trainable.empty()) net.train_only(trainable);
  testing::TestSgd optim;
  for (size_t s = 0; s < batches.size(); ++s) {
    testing::TestAdamW::zero_grad(net.parameters());
    autograd::backward(mse(net.forward(batches[s].x), batches[s].y));
    if (s == 0 && first_grad_norm != nullptr) {
      double total = 0;
      for (const Tensor& p : net.trainable_parameters())
        for (double g : p.grad().to_vector<double>()) total += g * g;
      *first_grad_norm = std::sqrt(total);
    }
    optim.step(net.trainable_parameters());
  }
  std::vector<nn::NamedTensor> out;
  for (const auto& [name, p] : net.named_parameters()) out.emplace_back(name, p.detach().clone());
  return out;
}

struct FsdpRun {
  std::vector<nn::NamedTensor> full;  // gathered after training
  std::vector<FullyShardedModel::UnitInfo> units;
  MemoryStats memory;
  double first_grad_norm = 0;
  std::map<std::string, DType> shard_dtypes;
  std::map<std::string, bool> shard_has_grad;
  std::map<std::string, bool> shard_requires_grad;
};

// The same training with FSDP on this rank's share of each batch.
FsdpRun fsdp_training(const std::vector<Batch>& batches, FsdpOptions options, bool wrap,
                      const std::vector<std::string>& trainable = {}) {
  auto comm = world_comm();
  const int rank = comm->rank(), world = comm->size();
  const DType compute = options.compute_dtype.value_or(DType::f32);
  TinyNet net(kWidths, 5 + static_cast<uint64_t>(rank));  // rank 0's weights are broadcast
  if (!trainable.empty()) net.train_only(trainable);
  FullyShardedModel fsdp(net, comm, options);
  if (wrap)
    for (size_t i = 0; i < net.blocks.size(); ++i)
      net.runners[i] = fsdp.wrap("blocks." + std::to_string(i), net.blocks[i]);
  testing::TestSgd optim;
  FsdpRun run;
  for (size_t s = 0; s < batches.size(); ++s) {
    const std::vector<Tensor> shards = testing::values(fsdp.trainable_shards());
    testing::TestAdamW::zero_grad(shards);
    Tensor x = testing::local_rows(batches[s].x, rank, world).to(compute);
    Tensor y = testing::local_rows(batches[s].y, rank, world).to(compute);
    Tensor loss = fsdp.forward([&] { return mse(net.forward(x), y); });
    autograd::backward(loss);
    if (s == 0) run.first_grad_norm = fsdp.grad_norm();
    optim.step(shards);
  }
  run.full = fsdp.gather_full_parameters();
  run.units = fsdp.units();
  run.memory = fsdp.memory();
  for (const auto& [name, shard] : fsdp.named_shards()) {
    run.shard_dtypes[name] = shard.dtype();
    run.shard_has_grad[name] = shard.grad().defined();
    run.shard_requires_grad[name] = shard.requires_grad();
  }
  return run;
}

void expect_same_parameters(const std::vector<nn::NamedTensor>& actual, const std::vector<nn::NamedTensor>& expected,
                            double atol, double rtol) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_EQ(actual[i].first, expected[i].first);
    EXPECT_TRUE(all_close(actual[i].second.to(DType::f64), expected[i].second.to(DType::f64), atol, rtol))
        << actual[i].first;
  }
}

const FullyShardedModel::UnitInfo& unit_named(const std::vector<FullyShardedModel::UnitInfo>& units,
                                              const std::string& name) {
  for (const auto& unit : units)
    if (unit.name == name) return unit;
  throw Error("no unit " + name);
}

TEST(Fsdp, TwoRanksTrainLikeOneProcessWithWrappedUnits) {
  const auto batches = testing::make_batches(kSteps, kBatch, kWidths.front());
  double reference_norm = 0;
  const auto expected = reference_training(batches, {}, &reference_norm);
  struct Variant {
    bool prefetch, reshard;
  };
  for (Variant v : {Variant{true, true}, Variant{false, true}, Variant{true, false}}) {
    SCOPED_TRACE("prefetch " + std::to_string(v.prefetch) + " reshard_after_forward " + std::to_string(v.reshard));
    FsdpRun run = fsdp_training(
        batches, {.units = {"blocks.*"}, .reshard_after_forward = v.reshard, .prefetch = v.prefetch}, true);
    expect_same_parameters(run.full, expected, 1e-5, 1e-4);
    EXPECT_NEAR(run.first_grad_norm, reference_norm, 1e-5 * reference_norm);
    ASSERT_EQ(run.units.size(), 4u);  // <root> (the head) and one unit per block
    for (int i = 0; i < 3; ++i) {
      const auto& unit = unit_named(run.units, "blocks." + std::to_string(i));
      EXPECT_EQ(unit.params, (std::vector<std::string>{"blocks." + std::to_string(i) + ".fc.weight",
                                                       "blocks." + std::to_string(i) + ".fc.bias"}));
      EXPECT_TRUE(unit.wrapped);
      EXPECT_EQ(unit.forward_gathers, kSteps);
      EXPECT_EQ(unit.backward_gathers, v.reshard ? kSteps : 0);  // gathered again for backward
      EXPECT_EQ(unit.reduce_scatters, kSteps);
      EXPECT_FALSE(unit.gathered);
    }
    const auto& root = unit_named(run.units, "<root>");
    EXPECT_EQ(root.params, (std::vector<std::string>{"head.weight", "head.bias"}));
    EXPECT_EQ(root.forward_gathers, kSteps);
    EXPECT_EQ(root.backward_gathers, 0);
    EXPECT_EQ(run.memory.gathered_parameters, 0);  // nothing stays gathered between steps
    EXPECT_EQ(run.memory.communication_buffers, 0);
    EXPECT_GT(run.memory.communication_peak, 0);
  }
}

TEST(Fsdp, UnwrappedUnitsAreGatheredByForwardAndStillTrainLikeOneProcess) {
  const auto batches = testing::make_batches(kSteps, kBatch, kWidths.front());
  const auto expected = reference_training(batches, {});
  FsdpRun run = fsdp_training(batches, {.units = {"blocks.*"}}, false);
  expect_same_parameters(run.full, expected, 1e-5, 1e-4);
  for (const auto& unit : run.units) {
    EXPECT_FALSE(unit.wrapped);
    EXPECT_EQ(unit.forward_gathers, kSteps) << unit.name;
    EXPECT_EQ(unit.backward_gathers, 0) << unit.name;
  }
}

// A model that calls its children itself (nn::Sequential, like the DC-AE stages) cannot be wrapped: its units are
// gathered by forward() and freed as backward finishes them. Conv weights [O, I, kh, kw] shard along O.
TEST(Fsdp, DcaeConvBlocksInAnUnwrappedSequentialTrainLikeOneProcess) {
  auto comm = world_comm();
  const int rank = comm->rank(), world = comm->size();
  Tensor images = testing::random_tensor({kBatch, 4, 4, 3}, 700, DType::f32);
  Tensor targets = testing::random_tensor({kBatch, 4, 4, 3}, 701, DType::f32);
  auto reference = testing::conv_net(13);
  testing::TestSgd reference_optim;
  auto net = testing::conv_net(13 + static_cast<uint64_t>(rank));
  FullyShardedModel fsdp(*net, comm, {.units = {"?"}});  // "0", "1" (the ResBlock), "2"
  EXPECT_EQ(fsdp.layout("1.conv1.weight").full_shape, (Shape{8, 8, 3, 3}));
  testing::TestSgd optim;
  Tensor x = testing::local_rows(images, rank, world), y = testing::local_rows(targets, rank, world);
  for (int step = 0; step < 2; ++step) {
    testing::TestAdamW::zero_grad(reference->parameters());
    autograd::backward(mse(reference->forward(images), targets));
    reference_optim.step(reference->parameters());
    const std::vector<Tensor> shards = testing::values(fsdp.trainable_shards());
    testing::TestAdamW::zero_grad(shards);
    autograd::backward(fsdp.forward([&] { return mse(net->forward(x), y); }));
    optim.step(shards);
  }
  expect_same_parameters(fsdp.gather_full_parameters(), reference->named_parameters(), 1e-5, 1e-4);
  EXPECT_EQ(fsdp.units().size(), 4u);
  EXPECT_EQ(fsdp.memory().gathered_parameters, 0);
}

// Phase 2: blocks.0 frozen below the first trainable layer, blocks.2 frozen above it.
TEST(Fsdp, FrozenUnitsStayBitIdenticalWithoutGradientsOrBackwardBelowTheFirstTrainable) {
  const auto batches = testing::make_batches(kSteps, kBatch, kWidths.front());
  const std::vector<std::string> trainable = {"blocks.1.*", "head.*"};
  const auto expected = reference_training(batches, trainable);
  const TinyNet initial(kWidths, 5);
  FsdpRun run = fsdp_training(batches, {.units = {"blocks.*"}}, true, trainable);
  expect_same_parameters(run.full, expected, 1e-5, 1e-4);
  for (const auto& [name, full] : run.full) {
    const bool frozen = name.rfind("blocks.0.", 0) == 0 || name.rfind("blocks.2.", 0) == 0;
    if (frozen) {
      EXPECT_TRUE(all_close(full, initial.parameter(name), 0, 0)) << name << " changed";
      EXPECT_FALSE(run.shard_has_grad[name]) << name;
      EXPECT_FALSE(run.shard_requires_grad[name]) << name;  // so the optimizer builds no state for it
    } else {
      EXPECT_TRUE(run.shard_has_grad[name]) << name;
      EXPECT_TRUE(run.shard_requires_grad[name]) << name;
    }
  }
  const auto& below = unit_named(run.units, "blocks.0");
  EXPECT_EQ(below.forwards_without_backward, kSteps);  // ran with recording off
  EXPECT_EQ(below.backward_gathers, 0);
  EXPECT_EQ(below.reduce_scatters, 0);
  EXPECT_FALSE(below.trainable);
  const auto& above = unit_named(run.units, "blocks.2");
  EXPECT_EQ(above.forwards_without_backward, 0);
  EXPECT_EQ(above.backward_gathers, kSteps);  // its weights are needed for the input gradient
  EXPECT_EQ(above.reduce_scatters, 0);
  EXPECT_EQ(unit_named(run.units, "blocks.1").reduce_scatters, kSteps);
}

int64_t shard_bytes(const ShardLayout& layout, DType dtype) {
  return layout.shard_numel() * static_cast<int64_t>(dtype_size(dtype));
}

TEST(Fsdp, Bf16ComputeKeepsFp32MastersAndFrozenShardsInBf16Only) {
  const auto batches = testing::make_batches(kSteps, kBatch, kWidths.front());
  const std::vector<std::string> trainable = {"blocks.1.*", "blocks.2.*", "head.*"};
  const auto expected = reference_training(batches, trainable);
  FsdpRun run = fsdp_training(batches, {.units = {"blocks.*"}, .compute_dtype = DType::bf16}, true, trainable);
  expect_same_parameters(run.full, expected, 2e-2, 2e-2);
  const int world = world_comm()->size();
  int64_t expected_params = 0, expected_grads = 0;
  for (const auto& [name, full] : run.full) {
    const bool frozen = name.rfind("blocks.0.", 0) == 0;
    EXPECT_EQ(run.shard_dtypes[name], frozen ? DType::bf16 : DType::f32) << name;
    EXPECT_EQ(full.dtype(), frozen ? DType::bf16 : DType::f32) << name;
    const ShardLayout layout = ShardLayout::make(full.shape(), world);
    expected_params += shard_bytes(layout, run.shard_dtypes[name]);
    if (!frozen) expected_grads += shard_bytes(layout, DType::f32);
  }
  // Per rank: padded shards only; gradients only for the trainable ones (fp32), none for frozen.
  EXPECT_EQ(run.memory.parameters, expected_params);
  EXPECT_EQ(run.memory.gradients, expected_grads);
  EXPECT_EQ(run.memory.gathered_parameters, 0);
}

TEST(Fsdp, ShardsHoldThisRanksRowsAndMemoryShrinksWithRanks) {
  auto comm = world_comm();
  TinyNet net(kWidths, 5);
  const TinyNet copy(kWidths, 5);
  int64_t full_bytes = 0;
  for (const Tensor& p : copy.parameters()) full_bytes += static_cast<int64_t>(p.nbytes());
  FullyShardedModel fsdp(net, comm, {.units = {"blocks.*"}});
  for (const auto& [name, shard] : fsdp.named_shards()) {
    const ShardLayout& layout = fsdp.layout(name);
    EXPECT_EQ(shard.shape(), layout.shard_shape()) << name;
    EXPECT_TRUE(shard.requires_grad());
    EXPECT_TRUE(shard.is_leaf());
    const int64_t n = layout.valid_rows(comm->rank());
    Tensor mine =
        copy.parameter(name).reshape({layout.rows, layout.row_numel}).narrow(0, layout.row_begin(comm->rank()), n);
    Tensor held = shard.view({layout.rows_per_rank, layout.row_numel});
    EXPECT_TRUE(all_close(held.narrow(0, 0, n), mine, 0, 0)) << name;
    EXPECT_TRUE(all_close(held.narrow(0, n, layout.rows_per_rank - n),
                          zeros({layout.rows_per_rank - n, layout.row_numel}), 0, 0))
        << name << " padding";
  }
  // The model's own tensors hold no memory between steps.
  for (const Tensor& p : net.parameters()) EXPECT_FALSE(storage_allocated(p));
  const MemoryStats memory = fsdp.memory();
  EXPECT_LE(memory.parameters, full_bytes / comm->size() + 4 * 64);  // 1/N of the model plus row padding
  EXPECT_GE(memory.parameters, full_bytes / comm->size());
  EXPECT_EQ(memory.gradients, 0);
  fsdp.set_optimizer_state_bytes(2 * memory.parameters);
  EXPECT_EQ(fsdp.memory().optimizer_state, 2 * memory.parameters);
  EXPECT_EQ(fsdp.memory().to_json()["parameters"].get<int64_t>(), memory.parameters);
  EXPECT_NE(fsdp.memory().str().find("params "), std::string::npos);
}

TEST(Fsdp, EvaluationForwardMatchesAndFreesEverything) {
  auto comm = world_comm();
  TinyNet net(kWidths, 5);
  TinyNet reference(kWidths, 5);
  FullyShardedModel fsdp(net, comm, {.units = {"blocks.*"}});
  for (size_t i = 0; i < net.blocks.size(); ++i)
    net.runners[i] = fsdp.wrap("blocks." + std::to_string(i), net.blocks[i]);
  Tensor x = testing::random_tensor({3, 5}, 77, DType::f32);
  autograd::NoGradGuard no_grad;
  Tensor out = fsdp.forward([&] { return net.forward(x); });
  EXPECT_TRUE(all_close(out, reference.forward(x), 1e-6, 1e-6));
  EXPECT_EQ(fsdp.memory().gathered_parameters, 0);
  for (const auto& unit : fsdp.units()) EXPECT_FALSE(unit.gathered) << unit.name;
}

TEST(Fsdp, WrappedUnitsHoldNoMemoryBetweenForwardAndBackward) {
  auto comm = world_comm();
  TinyNet net(kWidths, 5);
  FullyShardedModel fsdp(net, comm, {.units = {"blocks.*"}});
  for (size_t i = 0; i < net.blocks.size(); ++i)
    net.runners[i] = fsdp.wrap("blocks." + std::to_string(i), net.blocks[i]);
  Tensor x = testing::random_tensor({2, 5}, 31, DType::f32);
  Tensor loss = fsdp.forward([&] { return ops::sum(net.forward(x)); });
  // Only the root unit (the head, needed first by backward) stays gathered; the blocks' saved weights were freed
  // and come back when their backward starts.
  EXPECT_EQ(fsdp.memory().gathered_parameters, static_cast<int64_t>((4 * 3 + 3) * sizeof(float)));
  for (const auto& block : net.blocks)
    for (const Tensor& p : block->parameters()) EXPECT_FALSE(storage_allocated(p));
  autograd::backward(loss);
  EXPECT_EQ(fsdp.memory().gathered_parameters, 0);
  for (const auto& unit : fsdp.units()) EXPECT_EQ(unit.reduce_scatters, 1) << unit.name;
}

TEST(Fsdp, UnwrappedFrozenUnitsNoBackwardNeedsAreFreedRightAfterForward) {
  auto comm = world_comm();
  TinyNet net(kWidths, 5);
  net.train_only({"blocks.2.*", "head.*"});
  FullyShardedModel fsdp(net, comm, {.units = {"blocks.*"}});
  Tensor x = testing::random_tensor({2, 5}, 32, DType::f32);
  Tensor loss = fsdp.forward([&] { return ops::sum(net.forward(x)); });
  const auto units = fsdp.units();
  EXPECT_FALSE(unit_named(units, "blocks.0").gathered);  // frozen, below the first trainable layer
  EXPECT_FALSE(unit_named(units, "blocks.1").gathered);
  EXPECT_TRUE(unit_named(units, "blocks.2").gathered);  // its gradients are still to come
  autograd::backward(loss);
  for (const auto& unit : fsdp.units()) EXPECT_FALSE(unit.gathered) << unit.name;
  EXPECT_TRUE(fsdp.trainable_shards().size() == 4u);
}

TEST(Fsdp, GradientsAccumulateOverMicroSteps) {
  auto comm = world_comm();
  const int rank = comm->rank(), world = comm->size();
  const auto batches = testing::make_batches(2, kBatch, kWidths.front());
  TinyNet reference(kWidths, 5);
  for (const Batch& b : batches) autograd::backward(mse(reference.forward(b.x), b.y));
  TinyNet net(kWidths, 5);
  FullyShardedModel fsdp(net, comm, {.units = {"blocks.*"}});
  for (size_t i = 0; i < net.blocks.size(); ++i)
    net.runners[i] = fsdp.wrap("blocks." + std::to_string(i), net.blocks[i]);
  for (const Batch& b : batches) {
    Tensor x = testing::local_rows(b.x, rank, world), y = testing::local_rows(b.y, rank, world);
    autograd::backward(fsdp.forward([&] { return mse(net.forward(x), y); }));
  }
  for (const auto& [name, shard] : fsdp.trainable_shards()) {
    const ShardLayout& layout = fsdp.layout(name);
    const int64_t n = layout.valid_rows(rank);
    Tensor expected =
        reference.parameter(name).grad().reshape({layout.rows, layout.row_numel}).narrow(0, layout.row_begin(rank), n);
    EXPECT_TRUE(
        all_close(shard.grad().view({layout.rows_per_rank, layout.row_numel}).narrow(0, 0, n), expected, 1e-6, 1e-5))
        << name;
  }
}

TEST(Fsdp, ErrorsNameTheUnitOrTheMisuse) {
  auto comm = world_comm();
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  {
    TinyNet net(kWidths, 5);
    const std::string text = message([&] { FullyShardedModel fsdp(net, comm, {.units = {"decoder.*"}}); });
    EXPECT_NE(text.find("'decoder.*' matches no module"), std::string::npos) << text;
  }
  TinyNet net(kWidths, 5);
  FullyShardedModel fsdp(net, comm, {.units = {"blocks.*"}});
  EXPECT_NE(message([&] { fsdp.wrap("blocks.0", net.blocks[1]); }).find("not that unit's module"), std::string::npos);
  EXPECT_NE(message([&] { fsdp.wrap("blocks.9", net.blocks[0]); }).find("no unit named 'blocks.9'"), std::string::npos);
  net.runners[0] = fsdp.wrap("blocks.0", net.blocks[0]);
  Tensor x = testing::random_tensor({2, 5}, 9, DType::f32);
  EXPECT_NE(message([&] { net.runners[0]->forward(x); }).find("outside FullyShardedModel::forward"), std::string::npos);
  Tensor loss = fsdp.forward([&] { return ops::sum(net.forward(x)); });
  EXPECT_NE(
      message([&] { fsdp.forward([&] { return net.forward(x); }); }).find("before the previous forward's backward"),
      std::string::npos);
  autograd::backward(loss);  // the step completes normally after the refused call
  EXPECT_EQ(fsdp.memory().gathered_parameters, 0);
  EXPECT_NE(message([&] { fsdp.layout("head.nope"); }).find("head.nope"), std::string::npos);
}

}  // namespace
}  // namespace dcae::dist
