// dcae-trainer data parallel, end to end: `mpirun -np 2 dcae-trainer` on the tiny phase-1 recipe (synthetic
// images) against one process on the same global batch, replicas that stay identical (parameters and BatchNorm
// statistics), rank-0-only outputs and resume on two ranks. Skipped without MPI. FSDP runs are in
// trainer_fsdp_test.cpp, the GAN on several ranks in trainer_gan_ddp_test.cpp.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "tests/trainer/trainer_mpi_testing.h"

namespace dcae::trainer {
namespace {

namespace fs = std::filesystem;
using testing::RankRun;
using testing::read_text;
using testing::run_trainer;
using testing::ScratchDir;
using testing::train_rows;
using testing::worst_ratio;

// The tiny phase-1 recipe on synthetic 32^2 images: 3 steps of 2 micro-batches, a checkpoint every 2 steps.
std::string common_args(const std::string& out_dir) {
  std::ostringstream args;  // (not operator+: GCC 12 warns falsely about it here)
  args << "'" << DCAE_SOURCE_DIR << "/recipes/tiny_phase1.toml' --out '" << out_dir
       << "' --set data.source=synthetic --set data.resolution=32 --set data.synthetic_images=64 "
          "--set train.steps=3 --set train.grad_accum=2 --set schedule.warmup_steps=1 --set eval.every=2 "
          "--set eval.images=2 --set checkpoint.every=2 --set checkpoint.keep_last=3 --set log.every=1 ";
  return args.str();
}

class TrainerDdp : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef DCAE_MPIEXEC
    GTEST_SKIP() << "built without MPI: no mpirun to start two ranks";
#endif
  }
};

TEST_F(TrainerDdp, TwoRanksEqualOneProcessOnTheGlobalBatchAndStayIdentical) {
  ScratchDir dir;
  // Two ranks of 2 images per micro-batch against one process of 4: the same images in every step (rank r takes
  // every other sample of the epoch order), so the averaged gradients, and the whole run, match up to rounding.
  const RankRun ddp = run_trainer(dir, 2, common_args(dir.file("ddp")) + "--set data.batch_size=2");
  ASSERT_EQ(ddp.code, 0) << ddp.output;
  EXPECT_NE(ddp.output.find("data parallel over 2 ranks (mpi)"), std::string::npos) << ddp.output;
  EXPECT_NE(ddp.output.find("finished at step 3"), std::string::npos) << ddp.output;
  const RankRun single = run_trainer(dir, 1, common_args(dir.file("single")) + "--set data.batch_size=4");
  ASSERT_EQ(single.code, 0) << single.output;

  // Replicas: both ranks end with the same parameters, bit for bit.
  const std::string digest0 = read_text(dir.file("ddp/param_digest.rank0"));
  ASSERT_FALSE(digest0.empty());
  EXPECT_EQ(digest0, read_text(dir.file("ddp/param_digest.rank1")));

  // Only rank 0 writes the run folder's metrics, grids and checkpoints.
  EXPECT_FALSE(fs::exists(dir.file("ddp/metrics.rank1.jsonl")));
  EXPECT_TRUE(fs::exists(dir.file("ddp/grids/step_00000002.png")));

  // Logged losses are global (averaged over ranks): they equal the one-process losses on the global batch.
  const auto ddp_rows = train_rows(dir.file("ddp/metrics.jsonl")), single_rows = train_rows(dir.file("single/metrics.jsonl"));
  ASSERT_EQ(ddp_rows.size(), 3u);
  ASSERT_EQ(single_rows.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    for (const char* key : {"loss", "l1", "grad_norm"})
      EXPECT_NEAR(ddp_rows[i][key].get<double>(), single_rows[i][key].get<double>(),
                  1e-4 * std::abs(single_rows[i][key].get<double>()))
          << key << " at step " << i + 1;
    // The throughput counts the global batch (2 ranks x 2 images x 2 micro-batches per step).
    EXPECT_GT(ddp_rows[i]["img_per_s"].get<double>(), 0.0);
  }

  // Rank 0's checkpoints equal the one-process ones within fp32 rounding (AdamW on 3 steps).
  for (const char* step : {"step_00000002", "step_00000003"}) {
    const std::string a = dir.file(std::string("ddp/checkpoints/") + step + "/model.safetensors");
    const std::string b = dir.file(std::string("single/checkpoints/") + step + "/model.safetensors");
    ASSERT_TRUE(fs::exists(a) && fs::exists(b)) << step;
    const double worst = worst_ratio(a, b, 1e-5, 1e-3);
    EXPECT_LE(worst, 1.0) << step;
    std::printf("%s: worst |ddp - single| / (1e-5 + 1e-3 |single|) = %.3g\n", step, worst);
  }
}

TEST_F(TrainerDdp, BatchNormStatisticsStayReplicatedAndResumeIsExact) {
  ScratchDir dir;
  // BatchNorm in the decoder: each rank's running statistics see its own half of the batch, so they stay equal
  // only because rank 0's are broadcast after every step.
  const std::string args = "--set 'model.config.decoder_norm_types=\"batch_norm\"' --set data.batch_size=2";
  const RankRun straight = run_trainer(dir, 2, common_args(dir.file("straight")) + args);
  ASSERT_EQ(straight.code, 0) << straight.output;
  EXPECT_EQ(read_text(dir.file("straight/param_digest.rank0")), read_text(dir.file("straight/param_digest.rank1")));

  // Stop after the step-2 checkpoint, then continue on two ranks: every rank loads rank 0's checkpoint.
  const RankRun first = run_trainer(dir, 2, common_args(dir.file("resumed")) + args + " --stop-at 2");
  ASSERT_EQ(first.code, 0) << first.output;
  EXPECT_NE(first.output.find("stopped at step 2"), std::string::npos) << first.output;
  const RankRun second = run_trainer(dir, 2, common_args(dir.file("resumed")) + args);
  ASSERT_EQ(second.code, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from"), std::string::npos) << second.output;
  const std::string digest = read_text(dir.file("resumed/param_digest.rank0"));
  EXPECT_EQ(digest, read_text(dir.file("resumed/param_digest.rank1")));
  EXPECT_EQ(digest, read_text(dir.file("straight/param_digest.rank0")));  // the same run, bit for bit
}

}  // namespace
}  // namespace dcae::trainer
