// train.cuda_graph on the CPU: every recipe the graph cannot take is refused naming its reason, and the device-side
// pieces the graphed step is made of (DeviceStepStats, Ema::update_from_if, NonFiniteTracker's batched accounting)
// compute what the eager job computes on the host. These are plain ops, so they run here too.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/testing/check.h"
#include "tests/trainer/job_testing.h"
#include "trainer/device_step_stats.h"
#include "trainer/ema.h"
#include "trainer/optim/clip.h"

namespace dcae::trainer {
namespace {

using testing::bit_identical;
using testing::error_of;
using testing::ScratchDir;
using testing::tiny_recipe;

void expect_refused(const std::vector<std::string>& overrides, const std::string& reason) {
  ScratchDir dir;
  std::vector<std::string> all = {"train.cuda_graph=true"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  const std::string m = error_of([&] { tiny_recipe(dir, all); });
  EXPECT_NE(m.find("train.cuda_graph = true"), std::string::npos) << m;
  EXPECT_NE(m.find(reason), std::string::npos) << "expected '" << reason << "' in: " << m;
}

TEST(CudaGraphRecipe, EachCaseTheGraphCannotTakeIsRefusedWithItsReason) {
  expect_refused({}, "needs a GPU, but train.device = \"cpu\"");
  expect_refused({"train.device=\"cuda\"", "loss.gan=0.1"}, "cannot take loss.gan = 0.1: the GAN alternates");
  expect_refused({"train.device=\"cuda\"", "train.precision=\"fp16\""}, "dynamic loss scaling decides on the host");
  expect_refused({"train.device=\"cuda\"", "dist.strategy=\"fsdp\""}, "cannot take dist.strategy = \"fsdp\"");
  expect_refused({"train.device=\"cuda\"", "optim.name=\"sgd\""}, "needs optim.name = \"adamw\"");
  // What the graph can take validates; the key defaults to false.
  ScratchDir dir;
  EXPECT_NO_THROW(tiny_recipe(dir, {"train.cuda_graph=true", "train.device=\"cuda\"", "train.precision=\"bf16\"",
                                    "train.grad_accum=2", "train.ema_decay=0.9", "train.clip_grad_norm=1.0"}));
  EXPECT_FALSE(tiny_recipe(dir, {}, "", "default.toml").get<bool>("train.cuda_graph"));
}

TEST(CudaGraphRecipe, TheJobRefusesWhatOnlyItKnows) {
  // "auto" on a machine without a GPU (or a CPU-only build) resolves to the CPU.
  if (cuda_available()) GTEST_SKIP() << "a GPU is visible: train.device = auto resolves to it";
  ScratchDir dir;
  const std::string m = error_of([&] { DcaeJob job(tiny_recipe(dir, {"train.cuda_graph=true", "train.device=\"auto\""})); });
  EXPECT_NE(m.find("train.cuda_graph = true needs a GPU, but train.device = 'auto' resolved to cpu"), std::string::npos) << m;
}

Tensor one(double v) { return full({1}, v, DType::f64); }
Tensor one_f32(double v) { return full({1}, v, DType::f32); }

TEST(DeviceStepStats, SumsTheWindowAndCountsSkipsAsTheHostTrackerDoes) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  DeviceStepStats stats({"loss", "l1"}, Device::cpu(), /*steps_done=*/10, /*in_a_row=*/1, /*max_in_a_row=*/3);
  NonFiniteTracker host(3);
  host.restore(1, 4);
  // Steps 11..16: finite, NaN loss, finite, Inf norm, NaN, NaN (the third in a row: the limit, at step 16).
  const std::vector<std::pair<double, double>> steps = {{0.5, 2.0}, {nan, 1.0}, {0.25, 3.0},
                                                        {0.125, inf}, {nan, nan}, {nan, 1.0}};
  std::vector<double> applied;
  for (const auto& [loss, norm] : steps) {
    const Tensor gated = norm + 0.0 * loss == norm + 0.0 * loss ? one_f32(norm) : one_f32(nan);
    applied.push_back(stats.record({one(loss), one(2 * loss)}, one_f32(norm), gated).item<double>());
  }
  EXPECT_EQ(applied, (std::vector<double>{1, 0, 1, 0, 0, 0}));
  const DeviceStepStats::NonFinite counts = stats.take_nonfinite();
  EXPECT_EQ(counts.skipped, 4);
  EXPECT_EQ(counts.last_skipped, 16);
  EXPECT_EQ(counts.in_a_row, 3);
  EXPECT_EQ(counts.limit_step, 16);
  // The host tracker, told in one batch, stops the run naming the step the eager job would have stopped at.
  const std::string m = error_of([&] {
    host.account_device_steps(counts.skipped, counts.last_skipped, counts.in_a_row, counts.limit_step);
  });
  EXPECT_NE(m.find("stopping at step 16: 3 non-finite steps in a row"), std::string::npos) << m;
  EXPECT_EQ(host.total_skipped(), 8);
  EXPECT_EQ(stats.take_nonfinite().skipped, 0);  // counted once
  const DeviceStepStats::Window window = stats.take_window();
  ASSERT_EQ(window.sums.size(), 2u);
  EXPECT_TRUE(std::isnan(window.sums[0].second));  // the eager window mean is NaN too
  EXPECT_TRUE(window.last_skipped);
  EXPECT_EQ(window.last_grad_norm, 1.0);
  // A new window starts from zero.
  stats.record({one(0.5), one(1.5)}, one_f32(2.0), one_f32(2.0));
  stats.record({one(0.25), one(0.75)}, one_f32(3.0), one_f32(3.0));
  const DeviceStepStats::Window next = stats.take_window();
  EXPECT_EQ(next.sums[0].second, 0.75);
  EXPECT_EQ(next.sums[1].second, 2.25);
  EXPECT_FALSE(next.last_skipped);
  EXPECT_EQ(next.last_grad_norm, 3.0);
  const DeviceStepStats::NonFinite after = stats.take_nonfinite();
  EXPECT_EQ(after.in_a_row, 0);
  EXPECT_EQ(after.limit_step, 16);  // stays: the run has already been stopped at it
}

TEST(DeviceStepStats, ASkipRunBelowTheLimitOnlyWarns) {
  DeviceStepStats stats({"loss"}, Device::cpu(), 0, 0, 3);
  NonFiniteTracker host(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double loss : {1.0, nan, nan, 1.0, nan}) stats.record({one(loss)}, one_f32(1.0), one_f32(loss == loss ? 1.0 : nan));
  const DeviceStepStats::NonFinite counts = stats.take_nonfinite();
  EXPECT_EQ(counts.skipped, 3);
  EXPECT_EQ(counts.last_skipped, 5);
  EXPECT_EQ(counts.in_a_row, 1);
  EXPECT_EQ(counts.limit_step, 0);
  host.account_device_steps(counts.skipped, counts.last_skipped, counts.in_a_row, counts.limit_step);
  EXPECT_EQ(host.total_skipped(), 3);
  EXPECT_EQ(host.in_a_row(), 1);
  // The next host decision continues the run of skips: two more in a row reach the limit.
  EXPECT_TRUE(host.skip(false, 6));
  EXPECT_NE(error_of([&] { host.skip(false, 7); }).find("stopping at step 7: 3 non-finite"), std::string::npos);
}

// On the GPU update_from_if rounds as update_from's add_ kernel (bit for bit: checked by the graph-vs-eager job test);
// the CPU update_from runs its own loop in the shadow dtype, so here they agree to a rounding.
TEST(EmaCapturable, UpdateFromIfMovesShadowsAsUpdateFromAndLeavesThemWhenNotApplied) {
  for (bool warmup : {true, false}) {
    Generator gen(3);
    std::vector<nn::NamedTensor> params = {{"a", randn({5, 3}, gen)}, {"b", randn({4}, gen, DType::f64)}};
    std::vector<nn::NamedTensor> params2 = {{"a", params[0].second.clone()}, {"b", params[1].second.clone()}};
    Ema eager(params, 0.95, warmup), device(params2, 0.95, warmup);
    device.make_capturable();
    for (int step = 0; step < 5; ++step) {
      std::vector<nn::NamedTensor> values = {{"b", randn({4}, gen, DType::f64)}, {"a", randn({5, 3}, gen)}};
      const bool apply = step != 2;
      if (apply) eager.update_from(values);
      const Tensor before = device.shadows()[0].second.clone();
      device.update_from_if(values, one(apply ? 1.0 : 0.0));
      EXPECT_EQ(bit_identical(before, device.shadows()[0].second), !apply) << "step " << step;
    }
    device.sync_updates_to_host();
    EXPECT_EQ(device.num_updates(), 4);
    EXPECT_EQ(device.num_updates(), eager.num_updates());
    for (size_t i = 0; i < 2; ++i)
      EXPECT_TRUE(dcae::testing::all_close(device.shadows()[i].second, eager.shadows()[i].second, 1e-7, 1e-6))
          << eager.shadows()[i].first;
  }
}

}  // namespace
}  // namespace dcae::trainer
