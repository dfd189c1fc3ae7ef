// The GAN (phase 3) on several ranks: `mpirun -np 2 dcae-trainer` on the tiny phase-3 recipe (synthetic images,
// adaptive GAN weight, a PatchGAN with BatchNorm) keeps the autoencoder and the discriminator identical on every
// rank, and without BatchNorm in the discriminator two ranks train what one process trains on the global batch
// (generator and discriminator). Skipped without MPI.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "tests/trainer/trainer_mpi_testing.h"

namespace dcae::trainer {
namespace {

namespace fs = std::filesystem;
using namespace testing;

// tiny_phase3 from random weights (no phase-2 run needed) on synthetic 32^2 images: 3 steps of 2 micro-batches,
// the GAN from step 1 on (step 0 is L1 alone), so both the plain and the adaptive-weight backward run.
std::string gan_args(const std::string& out_dir) {
  std::ostringstream args;
  args << "'" << DCAE_SOURCE_DIR << "/recipes/tiny_phase3.toml' --out '" << out_dir
       << "' --set 'model.init_from=\"\"' --set data.source=synthetic --set data.resolution=32 "
          "--set data.synthetic_images=64 --set train.steps=3 --set train.grad_accum=2 --set loss.gan_start_step=1 "
          "--set schedule.warmup_steps=1 --set eval.every=3 --set eval.images=2 --set checkpoint.every=3 "
          "--set log.every=1 ";
  return args.str();
}

class TrainerGanDdp : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef DCAE_MPIEXEC
    GTEST_SKIP() << "built without MPI: no mpirun to start two ranks";
#endif
  }
};

TEST_F(TrainerGanDdp, TwoRanksHoldTheSameGeneratorAndDiscriminator) {
  ScratchDir dir;
  const RankRun run = run_trainer(dir, 2, gan_args(dir.file("gan")) + "--set data.batch_size=2", "gan");
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("gan: discriminator data parallel over 2 ranks (mpi)"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("finished at step 3"), std::string::npos) << run.output;

  // One digest line for the autoencoder, one for the discriminator (its BatchNorm statistics included).
  const std::string digest0 = read_text(dir.file("gan/param_digest.rank0"));
  EXPECT_NE(digest0.find("\ndisc "), std::string::npos) << digest0;
  EXPECT_EQ(digest0, read_text(dir.file("gan/param_digest.rank1")));

  // The discriminator trained in steps 2 and 3 (global, averaged d_loss), not in step 1.
  const auto rows = train_rows(dir.file("gan/metrics.jsonl"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_FALSE(rows[0].contains("d_loss"));
  for (size_t i = 1; i < 3; ++i) {
    ASSERT_TRUE(rows[i].contains("d_loss")) << rows[i].dump();
    EXPECT_TRUE(std::isfinite(rows[i]["d_loss"].get<double>()));
    EXPECT_GT(rows[i]["gan_weight"].get<double>(), 0.0);
  }
  EXPECT_TRUE(fs::exists(dir.file("gan/checkpoints/step_00000003/disc.safetensors")));
}

TEST_F(TrainerGanDdp, TwoRanksTrainWhatOneProcessTrainsOnTheGlobalBatch) {
  ScratchDir dir;
  // Without BatchNorm the discriminator treats every image alone, so 2 ranks x 2 images equal 1 process x 4 (the
  // same images per micro-batch): averaged generator gradients, the adaptive weight from averaged gradients,
  // averaged discriminator gradients.
  const std::string no_norm = "--set loss.disc_norm=\"none\" ";
  const RankRun ddp = run_trainer(dir, 2, gan_args(dir.file("ddp")) + no_norm + "--set data.batch_size=2", "ddp");
  ASSERT_EQ(ddp.code, 0) << ddp.output;
  const RankRun single = run_trainer(dir, 1, gan_args(dir.file("single")) + no_norm + "--set data.batch_size=4", "single");
  ASSERT_EQ(single.code, 0) << single.output;
  EXPECT_EQ(read_text(dir.file("ddp/param_digest.rank0")), read_text(dir.file("ddp/param_digest.rank1")));

  const auto ddp_rows = train_rows(dir.file("ddp/metrics.jsonl")), single_rows = train_rows(dir.file("single/metrics.jsonl"));
  ASSERT_EQ(ddp_rows.size(), 3u);
  ASSERT_EQ(single_rows.size(), 3u);
  for (size_t i = 1; i < 3; ++i)
    for (const char* key : {"loss", "gan", "gan_weight", "d_loss", "logits_real", "logits_fake"})
      EXPECT_NEAR(ddp_rows[i][key].get<double>(), single_rows[i][key].get<double>(),
                  1e-6 + 1e-4 * std::abs(single_rows[i][key].get<double>()))
          << key << " at step " << i + 1;
  for (const char* file : {"model.safetensors", "disc.safetensors"}) {
    const std::string a = dir.file(std::string("ddp/checkpoints/step_00000003/") + file);
    const std::string b = dir.file(std::string("single/checkpoints/step_00000003/") + file);
    ASSERT_TRUE(fs::exists(a) && fs::exists(b)) << file;
    const double worst = worst_ratio(a, b, 1e-5, 1e-3);
    EXPECT_LE(worst, 1.0) << file;
    std::printf("%s: worst |ddp - single| / (1e-5 + 1e-3 |single|) = %.3g\n", file, worst);
  }
}

}  // namespace
}  // namespace dcae::trainer
