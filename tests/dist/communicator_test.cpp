// Collectives (MPI backend under mpirun -np 2, LocalCommunicator alone), shard layouts, launch detection, errors and
// the collective timeout.
#include <cstdlib>
#include <thread>

#include "dist/mpi_communicator.h"
#include "dist/shard_layout.h"
#include "tests/dist/dist_testing.h"

namespace dcae::dist {
namespace {

using testing::all_close;
using testing::random_tensor;
using testing::world_comm;

// Rank r's input for a test: its own seed, so every rank can compute every other rank's values.
Tensor input_of(int rank, const Shape& shape, uint64_t seed, DType dtype) {
  return random_tensor(shape, seed * 16 + static_cast<uint64_t>(rank), DType::f64).to(dtype);
}

// Sum (or mean) over ranks, in f64.
Tensor expected_reduction(int world, const Shape& shape, uint64_t seed, DType dtype, ReduceOp op) {
  std::vector<double> total(static_cast<size_t>(shape_numel(shape)), 0.0);
  for (int r = 0; r < world; ++r) {
    std::vector<double> v = input_of(r, shape, seed, dtype).to_vector<double>();
    for (size_t i = 0; i < v.size(); ++i) total[i] += v[i];
  }
  if (op == ReduceOp::avg)
    for (double& t : total) t /= world;
  return from_doubles(total, shape, DType::f64);
}

// Results are rounded once to the dtype (the sum itself is exact in fp32 staging for two ranks).
double tolerance(DType dtype) {
  switch (dtype) {
    case DType::bf16:
      return 1e-2;
    case DType::f16:
      return 1e-3;
    case DType::f32:
      return 1e-6;
    default:
      return 1e-12;
  }
}

TEST(ShardLayout, ChunksRowsAndPadsTheLastRanks) {
  ShardLayout a = ShardLayout::make({7, 3}, 2);
  EXPECT_EQ(a.rows_per_rank, 4);
  EXPECT_EQ(a.row_numel, 3);
  EXPECT_EQ(a.row_begin(1), 4);
  EXPECT_EQ(a.valid_rows(1), 3);
  EXPECT_EQ(a.shard_shape(), (Shape{4, 3}));
  ShardLayout b = ShardLayout::make({1}, 4);  // one row over four ranks: ranks 1..3 hold padding only
  EXPECT_EQ(b.valid_rows(0), 1);
  EXPECT_EQ(b.valid_rows(3), 0);
  EXPECT_EQ(b.row_begin(3), 1);
  ShardLayout scalar = ShardLayout::make({}, 2);  // a 0-d tensor is one row
  EXPECT_EQ(scalar.shard_shape(), (Shape{1}));
  EXPECT_EQ(scalar.valid_rows(1), 0);
  ShardLayout c = ShardLayout::make({5, 2, 2}, 3);
  EXPECT_EQ(c.shard_shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(c.valid_rows(2), 1);
  EXPECT_THROW(ShardLayout::make({4}, 0), Error);
}

TEST(Bootstrap, ContextMatchesTheCommunicator) {
  const DistContext& ctx = context();
  EXPECT_EQ(ctx.rank, world_comm()->rank());
  EXPECT_EQ(ctx.world_size, world_comm()->size());
  EXPECT_GE(ctx.local_rank, 0);
  EXPECT_LT(ctx.local_rank, ctx.local_world_size);
  EXPECT_EQ(ctx.mpi, world_comm()->backend() == "mpi");
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    EXPECT_EQ(ctx.local_rank, std::atoi(local));
  }
}

// Sets environment variables for one scope and restores the previous values.
class ScopedEnv {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second)
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      else
        ::unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(Bootstrap, DetectsTheLauncherFromItsEnvironment) {
  ScopedEnv env;
  for (const char* name :
       {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
        "PMIX_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"})
    env.set(name, nullptr);
  EXPECT_EQ(detect_launch().launcher, "none");
  EXPECT_FALSE(detect_launch().mpi);

  // srun --mpi=pmix -n 4: rank and local rank from Slurm (local rank 1 on rank 3: not rank % anything).
  env.set("SLURM_PROCID", "3");
  env.set("SLURM_STEP_NUM_TASKS", "4");
  env.set("SLURM_LOCALID", "1");
  env.set("PMIX_RANK", "3");
  DistContext srun = detect_launch();
  EXPECT_EQ(srun.launcher, "srun");
  EXPECT_EQ(srun.rank, 3);
  EXPECT_EQ(srun.world_size, 4);
  EXPECT_EQ(srun.local_rank, 1);
  EXPECT_TRUE(srun.mpi);

  // srun without PMIx cannot start Open MPI: say so instead of failing inside MPI_Init.
  env.set("PMIX_RANK", nullptr);
  try {
    detect_launch();
    ADD_FAILURE() << "srun without PMIx was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--mpi=pmix"), std::string::npos) << e.what();
  }

  // mpirun inside a batch script: the OMPI variables win over the batch step's SLURM_PROCID.
  env.set("OMPI_COMM_WORLD_SIZE", "2");
  env.set("OMPI_COMM_WORLD_RANK", "1");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
  DistContext mpirun = detect_launch();
  EXPECT_EQ(mpirun.launcher, "mpirun");
  EXPECT_EQ(mpirun.rank, 1);
  EXPECT_EQ(mpirun.local_rank, 1);
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "x");
  EXPECT_THROW(detect_launch(), Error);
}

TEST(Collectives, AllReduceSumAndAverageInEveryFloatDtypeAndOddSizes) {
  auto comm = world_comm();
  uint64_t seed = 1;
  for (DType dtype : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (const Shape& shape : {Shape{1}, Shape{7}, Shape{3, 5, 67}, Shape{0}}) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
        ++seed;
        Tensor t = input_of(comm->rank(), shape, seed, dtype);
        comm->all_reduce(t, op);
        EXPECT_EQ(t.dtype(), dtype);
        EXPECT_TRUE(all_close(t.to(DType::f64), expected_reduction(comm->size(), shape, seed, dtype, op),
                              tolerance(dtype), tolerance(dtype)))
            << dtype_name(dtype) << " " << shape_str(shape) << " " << reduce_op_name(op);
      }
    }
  }
  Tensor counts = from_vector<int64_t>({comm->rank() + 1, 10}, {2});
  comm->all_reduce(counts);
  EXPECT_EQ(counts.to_vector<int64_t>(),
            (std::vector<int64_t>{comm->size() * (comm->size() + 1) / 2, 10 * comm->size()}));
}

TEST(Collectives, AllGatherPlacesRankBlocksInOrder) {
  auto comm = world_comm();
  for (DType dtype : {DType::f32, DType::bf16, DType::f64, DType::i64}) {
    for (int64_t n : {1, 5, 1001}) {
      Tensor in = input_of(comm->rank(), {n}, 40 + static_cast<uint64_t>(n), DType::f64);
      if (dtype == DType::i64)
        in = from_doubles(std::vector<double>(static_cast<size_t>(n), comm->rank() * 3.0 + 1), {n});
      in = in.to(dtype);
      Tensor out = empty({comm->size(), n}, dtype);
      comm->all_gather(out, in);
      for (int r = 0; r < comm->size(); ++r) {
        Tensor expected = dtype == DType::i64 ? full({n}, r * 3.0 + 1, DType::f64)
                                              : input_of(r, {n}, 40 + static_cast<uint64_t>(n), DType::f64).to(dtype);
        EXPECT_TRUE(all_close(out.select(0, r).to(DType::f64), expected.to(DType::f64), 0, 0))  // moves are exact
            << dtype_name(dtype) << " n=" << n << " block " << r;
      }
    }
  }
}

TEST(Collectives, ReduceScatterKeepsThisRanksBlockOfTheReduction) {
  auto comm = world_comm();
  uint64_t seed = 70;
  for (DType dtype : {DType::f32, DType::bf16, DType::f64}) {
    for (int64_t block : {1, 9}) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
        ++seed;
        const Shape shape{comm->size() * block};
        Tensor in = input_of(comm->rank(), shape, seed, dtype);
        Tensor out = empty({block}, dtype);
        comm->reduce_scatter(out, in, op);
        Tensor expected =
            expected_reduction(comm->size(), shape, seed, dtype, op).narrow(0, comm->rank() * block, block);
        EXPECT_TRUE(all_close(out.to(DType::f64), expected, tolerance(dtype), tolerance(dtype)))
            << dtype_name(dtype) << " block " << block << " " << reduce_op_name(op);
      }
    }
  }
}

TEST(Collectives, BroadcastFromEveryRootAndBarrier) {
  auto comm = world_comm();
  for (int root = 0; root < comm->size(); ++root) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      Tensor t = input_of(comm->rank(), {3, 4}, 90 + static_cast<uint64_t>(root), dtype);
      comm->broadcast(t, root);
      EXPECT_TRUE(all_close(t.to(DType::f64),
                            input_of(root, {3, 4}, 90 + static_cast<uint64_t>(root), dtype).to(DType::f64), 0, 0));
    }
  }
  comm->barrier();
}

TEST(Collectives, ManyAsyncCollectivesInFlightCompleteInAnyWaitOrder) {
  auto comm = world_comm();
  std::vector<Tensor> tensors;
  std::vector<WorkPtr> works;
  for (int i = 0; i < 12; ++i) {
    tensors.push_back(input_of(comm->rank(), {17 + i}, 200 + static_cast<uint64_t>(i), DType::f32));
    works.push_back(comm->all_reduce_async(tensors.back(), ReduceOp::sum));
  }
  for (int i = 11; i >= 0; --i) {
    works[static_cast<size_t>(i)]->wait();
    EXPECT_TRUE(works[static_cast<size_t>(i)]->completed());
    EXPECT_TRUE(
        all_close(tensors[static_cast<size_t>(i)].to(DType::f64),
                  expected_reduction(comm->size(), {17 + i}, 200 + static_cast<uint64_t>(i), DType::f32, ReduceOp::sum),
                  1e-5, 1e-6));
  }
}

TEST(Collectives, BadArgumentsThrowNamingShapesBeforeAnythingIsSent) {
  auto comm = world_comm();
  const int64_t before = comm->sequence();
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor strided = zeros({4, 6}).transpose(0, 1);
  EXPECT_NE(message([&] { comm->all_reduce(strided); }).find("contiguous"), std::string::npos);
  const std::string gather = message([&] { comm->all_gather(zeros({comm->size() * 5 + 1}), zeros({5})); });
  EXPECT_NE(gather.find("Tensor[5]"), std::string::npos) << gather;
  EXPECT_NE(gather.find("rank " + std::to_string(comm->rank())), std::string::npos) << gather;
  EXPECT_NE(message([&] { comm->all_gather(zeros({comm->size() * 5}, DType::f64), zeros({5})); }).find("dtype"),
            std::string::npos);
  const std::string scatter = message([&] { comm->reduce_scatter(zeros({3}), zeros({comm->size() * 3 + 2})); });
  EXPECT_NE(scatter.find("reduce_scatter"), std::string::npos) << scatter;
  EXPECT_NE(message([&] { comm->all_reduce(zeros({2}, DType::i64), ReduceOp::avg); }).find("avg"), std::string::npos);
  EXPECT_NE(message([&] { comm->all_reduce(zeros({2}, DType::boolean)); }).find("does not support"), std::string::npos);
  EXPECT_NE(message([&] { comm->broadcast(zeros({2}), comm->size()); }).find("root"), std::string::npos);
  EXPECT_THROW(comm->set_timeout(Duration(0)), Error);
  EXPECT_EQ(comm->sequence(), before);  // nothing was issued, so the ranks stay in step
}

TEST(Collectives, LocalCommunicatorCopiesAndKeeps) {
  LocalCommunicator local;
  Tensor t = random_tensor({5}, 3, DType::f32);
  Tensor kept = t.clone();
  local.all_reduce(t, ReduceOp::avg);
  EXPECT_TRUE(all_close(t, kept, 0, 0));
  Tensor out = empty({5}, DType::f32);
  local.all_gather(out, t);
  EXPECT_TRUE(all_close(out, t, 0, 0));
  local.reduce_scatter(out, random_tensor({5}, 4, DType::f32));
  EXPECT_TRUE(all_close(out, random_tensor({5}, 4, DType::f32), 0, 0));
  EXPECT_EQ(local.backend(), "local");
  EXPECT_EQ(local.sequence(), 3);
}

#ifdef DCAE_WITH_MPI
// The other ranks skip a collective: rank 0's wait ends with an error naming its rank and the collective, and the
// communicator refuses further work. The skipping ranks issue the collective late so everyone can shut down.
TEST(CollectiveTimeout, SkippedCollectiveEndsWithAnErrorNamingIt) {
  if (world_comm()->size() < 2) GTEST_SKIP() << "needs mpirun -np 2";
  auto comm = std::make_shared<MpiCommunicator>(MPI_COMM_WORLD);
  comm->set_timeout(Duration(0.5));
  const auto start = std::chrono::steady_clock::now();
  Tensor t = ones({4});
  if (comm->rank() == 0) {
    try {
      comm->all_reduce(t);
      ADD_FAILURE() << "the all_reduce completed although rank 1 skipped it";
    } catch (const Error& e) {
      const std::string text = e.what();
      EXPECT_NE(text.find("rank 0 of " + std::to_string(comm->size())), std::string::npos) << text;
      EXPECT_NE(text.find("all_reduce #0"), std::string::npos) << text;
      EXPECT_NE(text.find("within 0.5 s"), std::string::npos) << text;
      EXPECT_NE(text.find("timeout"), std::string::npos) << text;
    }
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(waited, 0.5);
    EXPECT_LT(waited, 5.0);
    EXPECT_TRUE(comm->broken());
    try {
      comm->barrier();
      ADD_FAILURE() << "a broken communicator accepted a barrier";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
    }
  }
  world_comm()->barrier();                     // rank 0 has seen its error
  if (comm->rank() != 0) comm->all_reduce(t);  // the late ranks arrive: rank 0's stuck all_reduce completes
}

// Under `mpirun -np 2` with DCAE_DIST_ABORT_TEST=1 (its own ctest entry): rank 1 never issues the collective,
// rank 0 times out and ends the whole job through abort_job with the error; ctest looks for the message.
TEST(CollectiveTimeout, DeadRankEndsTheJobWithTheError) {
  if (std::getenv("DCAE_DIST_ABORT_TEST") == nullptr || world_comm()->size() < 2)
    GTEST_SKIP() << "run by the dist_abort_on_timeout ctest entry";
  auto comm = world_comm();
  comm->set_timeout(Duration(1.0));
  if (comm->rank() == 1) {
    std::this_thread::sleep_for(std::chrono::seconds(30));  // "hung": killed by the abort long before this ends
    return;
  }
  Tensor t = ones({8});
  try {
    comm->all_reduce(t);
  } catch (const Error& e) {
    abort_job(e.what(), 3);
  }
}
#endif

}  // namespace
}  // namespace dcae::dist
