// LossTerm::distribute: what a loss term does when the job runs on several ranks. Terms without networks of their
// own have nothing to do, an adversarial term that does not say how it synchronises its critic is refused by
// name, and the GAN on one rank stays as it was (its two-rank behaviour: trainer_gan_ddp_test.cpp).
#include <gtest/gtest.h>

#include "dist/communicator.h"
#include "tests/trainer/job_testing.h"
#include "trainer/gan_loss.h"

namespace dcae::trainer {
namespace {

using testing::error_of;
using testing::ScratchDir;

class PixelTerm final : public LossTerm {
 public:
  Tensor compute(const Tensor& recon, const Tensor&, int64_t) override { return recon; }
};

class CriticTermWithoutSync final : public LossTerm {
 public:
  Tensor compute(const Tensor& recon, const Tensor&, int64_t) override { return recon; }
  bool adversarial() const override { return true; }
};

TEST(LossDistribute, PlainTermsHaveNothingToDoAndUnsynchronisedCriticsAreRefused) {
  const auto comm = std::make_shared<dist::LocalCommunicator>();
  PixelTerm pixel;
  EXPECT_NO_THROW(pixel.distribute(comm));
  CriticTermWithoutSync critic;
  EXPECT_NE(error_of([&] { critic.distribute(comm); }).find("trains a critic of its own but does not synchronise it"),
            std::string::npos);
}

TEST(LossDistribute, GanOnOneRankKeepsItsDiscriminatorAndOptimizer) {
  ScratchDir dir;
  const Recipe recipe = testing::tiny_recipe(dir, {}, "[loss]\ngan = 1.0\ndisc_layers = 1\ndisc_channels = 8\n");
  LossSpec spec;
  spec.name = "gan";
  spec.recipe = &recipe;
  spec.seed = 3;
  spec.total_steps = 4;
  GanLoss gan(spec);
  const Optimizer* before = &gan.optimizer();
  const auto weights = testing::snapshot(gan.discriminator());
  gan.distribute(std::make_shared<dist::LocalCommunicator>());  // world size 1: nothing to wrap
  EXPECT_EQ(&gan.optimizer(), before);
  for (const auto& [name, t] : gan.discriminator().state()) EXPECT_TRUE(testing::bit_identical(t, weights.at(name))) << name;
  EXPECT_NE(error_of([&] { gan.distribute(nullptr); }).find("needs a communicator"), std::string::npos);
}

}  // namespace
}  // namespace dcae::trainer
