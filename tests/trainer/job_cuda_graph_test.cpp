// train.cuda_graph = true on a GPU (skips without one): the tiny recipe trained with the captured step equals the
// eager job (logged window means, gradient norms, fp32 masters, BatchNorm statistics, EMA evaluations, optimizer
// step counts), in fp32 and with bf16 weights; a graphed run stopped at a checkpoint and resumed (captured again)
// equals an uninterrupted one; NaN batches are skipped on the device and counted, and too many in a row stop the
// run at the step the eager job stops at, with its message.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <set>

#include "tests/cuda/cuda_test_util.h"
#include "tests/testing/check.h"
#include "tests/trainer/job_testing.h"
#include "trainer/registries.h"

namespace dcae::trainer {
namespace {

using dcae::testing::all_close;
using testing::error_of;
using testing::ScratchDir;
using testing::tiny_recipe;

class JobCudaGraph : public dcae::testing::CudaTest {};

std::vector<nlohmann::json> train_rows(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) {
      nlohmann::json row = nlohmann::json::parse(line);
      if (row.value("split", "") == "train") rows.push_back(row);
    }
  return rows;
}

// Relative closeness of two logged numbers (NaN is written as null: both must be).
void expect_close(const nlohmann::json& a, const nlohmann::json& b, double rtol, const std::string& what) {
  ASSERT_EQ(a.is_null(), b.is_null()) << what << ": " << a << " vs " << b;
  if (a.is_null()) return;
  const double x = a.get<double>(), y = b.get<double>();
  EXPECT_NEAR(x, y, rtol * std::max(std::abs(y), 1e-12)) << what;
}

void expect_same_rows(const std::string& eager_file, const std::string& graph_file, double loss_rtol, double norm_rtol) {
  const auto eager = train_rows(eager_file), graphed = train_rows(graph_file);
  ASSERT_EQ(eager.size(), graphed.size());
  ASSERT_FALSE(eager.empty());
  for (size_t i = 0; i < eager.size(); ++i) {
    const std::string at = "row " + std::to_string(i) + " (step " + eager[i]["step"].dump() + ")";
    EXPECT_EQ(graphed[i]["step"], eager[i]["step"]) << at;
    EXPECT_TRUE(graphed[i].value("cuda_graph", false)) << at;
    for (const char* key : {"loss", "l1"}) expect_close(graphed[i][key], eager[i][key], loss_rtol, at + " " + key);
    expect_close(graphed[i]["grad_norm"], eager[i]["grad_norm"], norm_rtol, at + " grad_norm");
    EXPECT_EQ(graphed[i]["skipped_steps"], eager[i]["skipped_steps"]) << at;
    EXPECT_EQ(graphed[i].value("skipped", false), eager[i].value("skipped", false)) << at;
    EXPECT_EQ(graphed[i]["lr"], eager[i]["lr"]) << at;
  }
}

void expect_same_state(DcaeJob& eager, DcaeJob& graphed, double atol, double rtol) {
  const auto a = eager.optimizer().named_masters(), b = graphed.optimizer().named_masters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(all_close(b[i].second, a[i].second, atol, rtol)) << a[i].first;
    EXPECT_EQ(graphed.optimizer().state(a[i].first).step, eager.optimizer().state(a[i].first).step) << a[i].first;
  }
  const auto bufs_a = eager.model().named_buffers(), bufs_b = graphed.model().named_buffers();
  for (size_t i = 0; i < bufs_a.size(); ++i)
    if (is_floating(bufs_a[i].second.dtype()))
      EXPECT_TRUE(all_close(bufs_b[i].second.to(DType::f32), bufs_a[i].second.to(DType::f32), atol, rtol)) << bufs_a[i].first;
}

TEST_F(JobCudaGraph, TrainingWithTheGraphEqualsTheEagerJob) {
  for (const std::string precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    const std::vector<std::string> common = {
        "train.device=\"cuda\"", "train.steps=7", "log.every=3", "train.ema_decay=0.9", "eval.every=3",
        "checkpoint.every=0", "train.precision=\"" + precision + "\"", "train.grad_accum=2", "optim.weight_decay=0.01"};
    std::vector<std::string> graph_overrides = common;
    graph_overrides.push_back("train.cuda_graph=true");
    ScratchDir a, b;
    DcaeJob eager(tiny_recipe(a, common)), graphed(tiny_recipe(b, graph_overrides));
    const JobSummary se = eager.run(), sg = graphed.run();
    const bool f32 = precision == "fp32";
    expect_same_rows(a.file("run/metrics.jsonl"), b.file("run/metrics.jsonl"), f32 ? 1e-5 : 1e-2, f32 ? 1e-4 : 1e-2);
    expect_same_state(eager, graphed, f32 ? 1e-5 : 1e-3, f32 ? 1e-4 : 1e-2);
    EXPECT_EQ(graphed.optimizer().state(graphed.optimizer().named_masters().front().first).step, 7);
    // Evaluations between replays (EMA weights swapped in and out) see the same models.
    ASSERT_EQ(se.evals.size(), sg.evals.size());
    for (size_t i = 0; i < se.evals.size(); ++i) {
      EXPECT_EQ(sg.evals[i].step, se.evals[i].step);
      EXPECT_NEAR(sg.evals[i].psnr, se.evals[i].psnr, f32 ? 1e-3 : 0.1) << "eval at step " << se.evals[i].step;
    }
    EXPECT_NEAR(sg.last_loss, se.last_loss, (f32 ? 1e-5 : 1e-2) * se.last_loss);
  }
}

TEST_F(JobCudaGraph, AGraphedRunResumedFromACheckpointEqualsAnUninterruptedOne) {
  const std::vector<std::string> recipe = {"train.device=\"cuda\"", "train.cuda_graph=true", "train.steps=6",
                                           "log.every=3", "train.ema_decay=0.9", "eval.every=0", "checkpoint.every=3",
                                           "train.clip_grad_norm=0.05"};  // small enough to clip on the device
  ScratchDir straight_dir, resumed_dir;
  DcaeJob straight(tiny_recipe(straight_dir, recipe));
  straight.run();
  {
    JobOptions stop;
    stop.stop_at = 3;
    DcaeJob first(tiny_recipe(resumed_dir, recipe), stop);
    EXPECT_TRUE(first.run().interrupted);
  }
  DcaeJob second(tiny_recipe(resumed_dir, recipe));
  ASSERT_TRUE(second.resumed_from().has_value());
  EXPECT_EQ(second.step(), 3);
  EXPECT_EQ(second.optimizer().state(second.optimizer().named_masters().front().first).step, 3);
  second.run();
  expect_same_state(straight, second, 1e-6, 1e-5);
  const auto a = train_rows(straight_dir.file("run/metrics.jsonl")), b = train_rows(resumed_dir.file("run/metrics.jsonl"));
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    expect_close(b[i]["loss"], a[i]["loss"], 1e-5, "loss");
    expect_close(b[i]["grad_norm"], a[i]["grad_norm"], 1e-4, "grad_norm");
  }
}

// Synthetic batches, NaN for the next() calls listed in poisoned().
std::set<int64_t>& poisoned() {
  static std::set<int64_t> calls;
  return calls;
}
class PoisonedSource final : public ImageSource {
 public:
  explicit PoisonedSource(const DataSpec& spec) : inner_(make_synthetic_source(spec)) {}
  Tensor next() override {
    Tensor batch = inner_->next();
    if (poisoned().count(calls_++)) batch.fill_(std::numeric_limits<double>::quiet_NaN());
    return batch;
  }
  nlohmann::json position() const override { return inner_->position(); }
  void restore(const nlohmann::json& position) override { inner_->restore(position); }
  Tensor eval_images() override { return inner_->eval_images(); }
  std::string summary() const override { return "poisoned " + inner_->summary(); }

 private:
  std::unique_ptr<ImageSource> inner_;
  int64_t calls_ = 0;
};
void register_poisoned_source() {
  static const bool done = [] {
    registries().datasets.add("test_poisoned", [](const DataSpec& spec) -> std::unique_ptr<ImageSource> {
      return std::make_unique<PoisonedSource>(spec);
    });
    return true;
  }();
  (void)done;
}

TEST_F(JobCudaGraph, NonFiniteStepsAreSkippedCountedAndStopTheRunAsInTheEagerJob) {
  register_poisoned_source();
  const std::vector<std::string> common = {"train.device=\"cuda\"", "train.steps=8", "log.every=4", "eval.every=0",
                                           "checkpoint.every=0", "train.max_nonfinite_steps=3",
                                           "data.source=\"test_poisoned\"", "train.ema_decay=0.9"};
  std::vector<std::string> graph_overrides = common;
  graph_overrides.push_back("train.cuda_graph=true");
  {
    // Steps 3 and 4 see NaN images: both skipped (BatchNorm statistics put back), then training goes on.
    poisoned() = {2, 3};
    ScratchDir a, b;
    DcaeJob eager(tiny_recipe(a, common));
    eager.run();
    DcaeJob graphed(tiny_recipe(b, graph_overrides));
    graphed.run();
    expect_same_rows(a.file("run/metrics.jsonl"), b.file("run/metrics.jsonl"), 1e-5, 1e-4);
    const auto rows = train_rows(b.file("run/metrics.jsonl"));
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_TRUE(rows[0]["loss"].is_null());  // the window mean over a NaN step, as the eager job logs it
    EXPECT_EQ(rows[0]["skipped"], true);     // step 4 itself was skipped
    EXPECT_EQ(rows[1]["skipped_steps"], 2);
    expect_same_state(eager, graphed, 1e-5, 1e-4);
    EXPECT_EQ(graphed.optimizer().state(graphed.optimizer().named_masters().front().first).step, 6);
  }
  {
    // NaN from step 3 on: the third skip in a row (step 5) stops both runs with the same message.
    poisoned() = {2, 3, 4, 5, 6, 7};
    ScratchDir a, b;
    DcaeJob eager(tiny_recipe(a, common));
    const std::string eager_error = error_of([&] { eager.run(); });
    DcaeJob graphed(tiny_recipe(b, graph_overrides));
    const std::string graph_error = error_of([&] { graphed.run(); });
    const std::string expected = "stopping at step 5: 3 non-finite steps in a row";
    EXPECT_NE(eager_error.find(expected), std::string::npos) << eager_error;
    EXPECT_NE(graph_error.find(expected), std::string::npos) << graph_error;
  }
  poisoned().clear();
}

}  // namespace
}  // namespace dcae::trainer
