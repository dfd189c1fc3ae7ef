// Exact resume: training N steps equals training k steps, saving, loading into fresh objects and training N-k more,
// bit for bit on the CPU (losses, weights, EMA, optimizer state), in fp32 and with bf16 weights + fp32 masters.
#include <gtest/gtest.h>

#include "core/autograd/engine.h"
#include "tests/trainer/trainer_testing.h"
#include "trainer/checkpoint.h"
#include "trainer/optim/clip.h"
#include "trainer/registries.h"

namespace dcae::trainer {
namespace {

constexpr int64_t kTotalSteps = 6;

// The pieces of a training loop: model, AdamW with a param group, cosine schedule with warmup, clipping, gradient
// accumulation over two micro-batches, EMA of the fp32 masters, and a data stream drawn from its own generator.
struct Run {
  Run(uint64_t init_seed, uint64_t data_seed, DType dtype) : net(init_seed, dtype), data(data_seed), dtype(dtype) {
    OptimizerConfig c;
    c.lr = 3e-2;
    c.weight_decay = 0.05;
    c.groups.push_back({{"fc2.*"}, 1e-2, std::nullopt});
    optim = make_optimizer(net.named_parameters(), c);
    ScheduleConfig s;
    s.name = "cosine";
    s.warmup_steps = 2;
    s.warmup_init_ratio = 0.1;
    s.min_lr_ratio = 0.1;
    s.decay_steps = kTotalSteps;
    schedule = make_schedule(s);
    ema = std::make_unique<Ema>(net.named_parameters(), 0.95);
  }

  double train_step() {
    optim->zero_grad();
    double loss_sum = 0.0;
    for (int micro = 0; micro < 2; ++micro) {
      const Tensor x = randn({4, 4}, data, dtype), target = randn({4, 3}, data, dtype);
      const Tensor loss = ops::mean(ops::square(ops::sub(net.forward(x), target)));
      autograd::backward(ops::mul(loss, 0.5));
      loss_sum += 0.5 * loss.item<double>();
    }
    EXPECT_TRUE(clip_grad_norm(optim->params(), 0.5).finite);
    optim->set_lr_factor(schedule->factor(step));
    optim->step();
    ema->update_from(optim->named_masters());
    ++step;
    return loss_sum;
  }

  CheckpointItems items() { return {{{"model", &net}}, ema.get(), {{"optim", optim.get()}}, {}}; }
  TrainerState state() const {
    TrainerState s;
    s.step = step;
    s.rng["data"] = capture_rng(data);
    s.data_position = {{"micro_batches_seen", 2 * step}};
    s.schedule = schedule->to_json();
    return s;
  }
  void restore(const TrainerState& s) {
    step = s.step;
    restore_rng(data, s.rng.at("data"));
    EXPECT_EQ(s.schedule, schedule->to_json());
    EXPECT_EQ(s.data_position["micro_batches_seen"], 2 * step);
  }

  testing::TinyNet net;
  Generator data;
  DType dtype;
  std::unique_ptr<Optimizer> optim;
  std::unique_ptr<Schedule> schedule;
  std::unique_ptr<Ema> ema;
  int64_t step = 0;
};

std::vector<std::vector<float>> values(const std::vector<nn::NamedTensor>& tensors) {
  std::vector<std::vector<float>> out;
  for (const auto& [name, t] : tensors) out.push_back(t.to_vector<float>());
  return out;
}

void check_exact_resume(DType dtype, int64_t resume_at) {
  SCOPED_TRACE(std::string("dtype ") + dtype_name(dtype) + ", resume at " + std::to_string(resume_at));
  Run straight(1, 77, dtype);
  std::vector<double> straight_losses;
  for (int64_t i = 0; i < kTotalSteps; ++i) straight_losses.push_back(straight.train_step());

  testing::ScratchDir dir;
  std::vector<double> resumed_losses;
  {
    Run first(1, 77, dtype);
    for (int64_t i = 0; i < resume_at; ++i) resumed_losses.push_back(first.train_step());
    save_checkpoint(dir.path(), first.items(), first.state());
  }  // everything of the first half is gone
  Run second(999, 5, dtype);  // other init and data seed: all of it must come from the checkpoint
  const auto folder = resolve_resume("auto", dir.path());
  ASSERT_TRUE(folder.has_value());
  second.restore(load_checkpoint(*folder, second.items()));
  EXPECT_EQ(second.step, resume_at);
  for (int64_t i = resume_at; i < kTotalSteps; ++i) resumed_losses.push_back(second.train_step());

  EXPECT_EQ(resumed_losses, straight_losses);  // bit for bit
  EXPECT_EQ(values(second.net.state()), values(straight.net.state()));
  EXPECT_EQ(values(second.ema->shadows()), values(straight.ema->shadows()));
  EXPECT_EQ(values(second.optim->named_masters()), values(straight.optim->named_masters()));
  EXPECT_EQ(values(second.optim->state_tensors()), values(straight.optim->state_tensors()));
  EXPECT_EQ(second.optim->state_json(), straight.optim->state_json());
  EXPECT_EQ(capture_rng(second.data).offset, capture_rng(straight.data).offset);
  // The losses did move: the test would notice a resume that silently restarted.
  EXPECT_NE(straight_losses.front(), straight_losses.back());
}

TEST(ExactResume, Fp32TrainingContinuesBitForBit) {
  check_exact_resume(DType::f32, 3);
  check_exact_resume(DType::f32, 1);  // resume inside the warmup
}

TEST(ExactResume, Bf16WeightsWithFp32MastersContinueBitForBit) { check_exact_resume(DType::bf16, 4); }

}  // namespace
}  // namespace dcae::trainer
