// SIGUSR1 stops a training run after its current step with a checkpoint (trainer/preemption.h), and a new job on
// the same run folder (checkpoint.resume = "auto") continues from it to the end, as a requeued Slurm job does.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>

#include "tests/trainer/job_testing.h"
#include "trainer/preemption.h"

namespace dcae::trainer {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

TEST(Preemption, SignalSetsTheFlagAndOneProcessAgreesWithItself) {
  install_stop_signal_handler();
  clear_stop_signal();
  EXPECT_FALSE(stop_signal_received());
  EXPECT_FALSE(stop_signal_on_any_rank(nullptr));
  ASSERT_EQ(std::raise(SIGUSR1), 0);  // the process lives on: the handler only records it
  EXPECT_TRUE(stop_signal_received());
  EXPECT_TRUE(stop_signal_on_any_rank(nullptr));
  clear_stop_signal();
  EXPECT_FALSE(stop_signal_received());
}

TEST(Preemption, StoppedRunWritesACheckpointAndTheNextJobFinishesFromIt) {
  ScratchDir dir;
  // Six steps with no periodic checkpoint and no evaluation: the only checkpoint before the end is the stop's.
  const std::vector<std::string> overrides = {"train.steps=6", "checkpoint.every=0", "eval.every=0",
                                              "checkpoint.resume=\"auto\""};
  {
    DcaeJob job(testing::tiny_recipe(dir, overrides));
    install_stop_signal_handler();
    ASSERT_EQ(std::raise(SIGUSR1), 0);  // arrives "during" the first step: the run stops once it is done
    const JobSummary summary = job.run();
    clear_stop_signal();
    EXPECT_TRUE(summary.preempted);
    EXPECT_TRUE(summary.interrupted);
    EXPECT_EQ(summary.steps_done, 1);
    EXPECT_TRUE(fs::exists(fs::path(job.checkpoint_dir()) / "step_00000001" / "COMPLETE"));
    EXPECT_FALSE(fs::exists(fs::path(job.checkpoint_dir()) / "step_00000006"));
  }
  DcaeJob requeued(testing::tiny_recipe(dir, overrides));
  ASSERT_TRUE(requeued.resumed_from().has_value());
  EXPECT_EQ(requeued.step(), 1);
  const JobSummary summary = requeued.run();
  EXPECT_FALSE(summary.preempted);
  EXPECT_FALSE(summary.interrupted);
  EXPECT_EQ(summary.steps_done, 6);
  EXPECT_TRUE(fs::exists(fs::path(requeued.checkpoint_dir()) / "step_00000006" / "COMPLETE"));
}

}  // namespace
}  // namespace dcae::trainer
