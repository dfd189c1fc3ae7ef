// Sharded checkpoints: save on the job's ranks, load on 1 rank and back on 2 (resharding), consolidation, the
// completion marker, and errors that name the tensor.
#include "dist/sharded_checkpoint.h"

#include <filesystem>
#include <fstream>

#include "dist/fsdp.h"
#include "nn/io/safetensors.h"
#include "tests/dist/dist_testing.h"

namespace dcae::dist {
namespace {

namespace fs = std::filesystem;
using testing::all_close;
using testing::TinyNet;
using testing::world_comm;

const std::vector<int64_t> kWidths = {5, 7, 6, 4};

std::string message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// A model sharded over `comm`, trained one step so the shards differ from any initialisation.
struct Sharded {
  Sharded(std::shared_ptr<Communicator> comm, uint64_t seed, const std::vector<std::string>& trainable, bool train_step)
      : net(kWidths, seed),
        fsdp((net.train_only(trainable), net), std::move(comm),
             {.units = {"blocks.*"}, .compute_dtype = DType::bf16, .broadcast_parameters = false}) {
    if (!train_step) return;
    Tensor x = testing::random_tensor({2, 5}, 50 + seed, DType::bf16);
    autograd::backward(fsdp.forward([&] { return ops::mean(ops::square(net.forward(x))); }));
    testing::TestSgd(0.5, 0).step(testing::values(fsdp.trainable_shards()));
  }
  // Optimizer-slot-like tensors shaped as the trainable shards, with rank-independent values per row.
  std::vector<ShardedTensor> slots(std::vector<Tensor>& storage) const {
    std::vector<ShardedTensor> out;
    for (const auto& [name, shard] : fsdp.trainable_shards()) {
      const ShardLayout& layout = fsdp.layout(name);
      Tensor full = testing::random_tensor(layout.full_shape, std::hash<std::string>{}(name) % 1000, DType::f32);
      Tensor slot = zeros(layout.shard_shape());
      ShardedTensor entry = fsdp.sharded_like(name, "exp_avg." + name, slot);
      copy_strided(
          entry.data,
          full.reshape(layout.rows_shape(layout.rows)).narrow(0, entry.row_begin, entry.row_end - entry.row_begin));
      storage.push_back(slot);
      out.push_back(entry);
    }
    return out;
  }
  std::vector<ShardedTensor> state(std::vector<Tensor>& storage) const {
    std::vector<ShardedTensor> all = fsdp.sharded_state();
    for (ShardedTensor& slot : slots(storage)) all.push_back(slot);
    return all;
  }
  TinyNet net;
  FullyShardedModel fsdp;
};

void expect_equal(const std::vector<nn::NamedTensor>& actual, const std::vector<nn::NamedTensor>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_EQ(actual[i].first, expected[i].first);
    EXPECT_EQ(actual[i].second.dtype(), expected[i].second.dtype()) << actual[i].first;
    EXPECT_TRUE(all_close(actual[i].second.to(DType::f64), expected[i].second.to(DType::f64), 0, 0)) << actual[i].first;
  }
}

const std::vector<std::string> kTrainable = {"blocks.1.*", "blocks.2.*", "head.*"};  // blocks.0 frozen (bf16 shard)

TEST(ShardedCheckpoint, SavedOnTheJobsRanksLoadsOnOneAndConsolidates) {
  auto comm = world_comm();
  testing::SharedTempDir tmp("save_load");
  const std::string dir = tmp.path() + "/step_00000001";
  Sharded trained(comm, 5, kTrainable, true);
  std::vector<Tensor> storage;
  save_sharded_checkpoint(dir, *comm, trained.state(storage), {{"step", 1}});
  const auto full = trained.fsdp.gather_full_parameters();

  ASSERT_TRUE(is_complete_sharded_checkpoint(dir));
  EXPECT_FALSE(fs::exists(dir + ".partial"));
  const ShardedManifest manifest = read_sharded_manifest(dir);
  EXPECT_EQ(manifest.world_size, comm->size());
  EXPECT_EQ(manifest.metadata["step"].get<int>(), 1);
  for (int r = 0; r < comm->size(); ++r)
    EXPECT_TRUE(fs::exists(dir + "/rank_0000" + std::to_string(r) + ".safetensors"));
  const auto& weight0 = manifest.entries.front();
  EXPECT_EQ(weight0.name, "blocks.0.fc.weight");
  EXPECT_EQ(weight0.full_shape, (Shape{7, 5}));
  EXPECT_EQ(weight0.dtype, DType::bf16);  // frozen: stored in the compute dtype
  EXPECT_FALSE(weight0.trainable);
  EXPECT_EQ(weight0.rows.back().second, 7);

  // Consolidated tensors are the full parameters (and the slots their full values).
  auto consolidated = consolidate_sharded_checkpoint(dir);
  ASSERT_EQ(consolidated.size(), full.size() + 6);
  expect_equal(
      std::vector<nn::NamedTensor>(consolidated.begin(), consolidated.begin() + static_cast<long>(full.size())), full);
  const Tensor slot = consolidated.back().second;
  EXPECT_EQ(consolidated.back().first, "exp_avg.head.bias");
  EXPECT_TRUE(
      all_close(slot, testing::random_tensor({3}, std::hash<std::string>{}("head.bias") % 1000, DType::f32), 0, 0));
  consolidate_to_safetensors(dir, tmp.path() + "/export_" + std::to_string(comm->rank()) + ".safetensors");
  nn::SafetensorsFile exported(tmp.path() + "/export_" + std::to_string(comm->rank()) + ".safetensors");
  EXPECT_EQ(exported.names().size(), consolidated.size());

  // N -> 1: a single process (its own world) reshards while loading.
  Sharded single(std::make_shared<LocalCommunicator>(), 99, kTrainable, false);
  std::vector<Tensor> single_storage;
  const std::vector<ShardedTensor> targets = single.state(single_storage);
  for (Tensor& t : single_storage) t.zero_();
  load_sharded_checkpoint(dir, targets);
  expect_equal(single.fsdp.gather_full_parameters(), full);
  EXPECT_TRUE(all_close(single_storage.back(), slot, 0, 0));
}

TEST(ShardedCheckpoint, SavedByOneProcessLoadsOnTheJobsRanks) {
  auto comm = world_comm();
  testing::SharedTempDir tmp("one_to_n");
  const std::string dir = tmp.path() + "/single";
  std::vector<nn::NamedTensor> full;
  if (comm->rank() == 0) {
    LocalCommunicator local;
    Sharded alone(std::make_shared<LocalCommunicator>(), 7, kTrainable, true);
    std::vector<Tensor> storage;
    save_sharded_checkpoint(dir, local, alone.state(storage));
    full = alone.fsdp.gather_full_parameters();
  }
  comm->barrier();
  EXPECT_EQ(read_sharded_manifest(dir).world_size, 1);
  Sharded job(comm, 40 + static_cast<uint64_t>(comm->rank()), kTrainable, false);
  std::vector<Tensor> storage;
  load_sharded_checkpoint(dir, job.state(storage));
  const auto loaded = job.fsdp.gather_full_parameters();
  if (comm->rank() == 0) expect_equal(loaded, full);
  // Every rank holds the same model afterwards: compare with rank 0's through a broadcast.
  for (const auto& [name, t] : loaded) {
    Tensor theirs = t.clone();
    comm->broadcast(theirs, 0);
    EXPECT_TRUE(all_close(t.to(DType::f64), theirs.to(DType::f64), 0, 0)) << name;
  }
  // Phase change on resume: everything trainable now; bf16-stored frozen rows load into fp32 masters.
  Sharded all_trainable(comm, 60, {"*"}, false);
  load_sharded_checkpoint(dir, all_trainable.fsdp.sharded_state());
  const auto converted = all_trainable.fsdp.gather_full_parameters();
  EXPECT_EQ(converted.front().second.dtype(), DType::f32);
  EXPECT_TRUE(all_close(converted.front().second, loaded.front().second.to(DType::f32), 0, 0));
}

TEST(ShardedCheckpoint, ReplicatedTensorsAndReplacingAnOldCheckpoint) {
  auto comm = world_comm();
  testing::SharedTempDir tmp("replicated");
  const std::string dir = tmp.path() + "/ckpt";
  Tensor scalar = scalar_tensor(3.5, DType::f64);
  Tensor table = testing::random_tensor({4, 2}, 8, DType::f32);
  save_sharded_checkpoint(dir, *comm,
                          {replicated("scalar", scalar, comm->rank()), replicated("table", table, comm->rank())});
  Tensor newer = ops::mul(table, 2.0);
  save_sharded_checkpoint(dir, *comm,
                          {replicated("scalar", scalar, comm->rank()), replicated("table", newer, comm->rank())});
  const auto tensors = consolidate_sharded_checkpoint(dir);
  ASSERT_EQ(tensors.size(), 2u);
  EXPECT_EQ(tensors[0].second.shape(), Shape{});
  EXPECT_EQ(tensors[0].second.item<double>(), 3.5);
  EXPECT_TRUE(all_close(tensors[1].second, newer, 0, 0));
  Tensor loaded = zeros({4, 2});
  load_sharded_checkpoint(dir, {{"table", {4, 2}, false, 1, 3, loaded.narrow(0, 1, 2)}});
  EXPECT_TRUE(all_close(loaded.narrow(0, 1, 2), newer.narrow(0, 1, 2), 0, 0));
  EXPECT_TRUE(all_close(loaded.narrow(0, 0, 1), zeros({1, 2}), 0, 0));
}

TEST(ShardedCheckpoint, ErrorsNameTheTensorOrTheMissingMarker) {
  auto comm = world_comm();
  testing::SharedTempDir tmp("errors");
  const std::string dir = tmp.path() + "/ckpt";
  Tensor table = testing::random_tensor({4, 2}, 9, DType::f32);
  save_sharded_checkpoint(dir, *comm, {replicated("table", table, comm->rank())});

  EXPECT_NE(message([&] {
              load_sharded_checkpoint(dir, {{"other", {4, 2}, false, 0, 4, zeros({4, 2})}});
            }).find("no tensor 'other'"),
            std::string::npos);
  const std::string shape = message([&] {
    load_sharded_checkpoint(dir, {{"table", {4, 3}, false, 0, 4, zeros({4, 3})}});
  });
  EXPECT_NE(shape.find("[4, 2]"), std::string::npos) << shape;
  EXPECT_NE(shape.find("[4, 3]"), std::string::npos) << shape;
  EXPECT_NE(message([&] {
              load_sharded_checkpoint(dir, {{"table", {4, 2}, false, 0, 4, zeros({3, 2})}});
            }).find("rows [0, 4)"),
            std::string::npos);
  EXPECT_NE(message([&] { read_sharded_manifest(tmp.path() + "/nothing"); }).find("COMPLETE"), std::string::npos);
  comm->barrier();
  if (comm->rank() == 0) fs::remove(dir + "/COMPLETE");
  comm->barrier();
  EXPECT_FALSE(is_complete_sharded_checkpoint(dir));
  EXPECT_NE(message([&] { consolidate_sharded_checkpoint(dir); }).find("not a complete sharded checkpoint"),
            std::string::npos);

  // Data that does not hold the rows it claims is refused before anything is written (on every rank).
  EXPECT_NE(message([&] {
              save_sharded_checkpoint(dir, *comm, {{"bad", {4}, true, 0, 2, zeros({3})}});
            }).find("'bad'"),
            std::string::npos);
  if (comm->size() < 2) return;
  // Ranks that disagree about the tensors, or whose rows overlap, get an error naming the tensor on every rank.
  const std::string name = comm->rank() == 0 ? "a" : "b";
  const std::string differ =
      message([&] { save_sharded_checkpoint(dir, *comm, {replicated(name, table, comm->rank())}); });
  EXPECT_NE(differ.find("differs"), std::string::npos) << differ;
  const std::string overlap = message([&] { save_sharded_checkpoint(dir, *comm, {{"t", {4, 2}, true, 0, 4, table}}); });
  EXPECT_NE(overlap.find("'t'"), std::string::npos) << overlap;
  EXPECT_NE(overlap.find("overlap"), std::string::npos) << overlap;
}

}  // namespace
}  // namespace dcae::dist
