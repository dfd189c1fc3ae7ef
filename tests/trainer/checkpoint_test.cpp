#include "trainer/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/autograd/engine.h"
#include "tests/testing/check.h"
#include "tests/trainer/trainer_testing.h"
#include "trainer/registries.h"

namespace dcae::trainer {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::TinyNet;

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

std::vector<std::vector<float>> values_of(const nn::Module& m) {
  std::vector<std::vector<float>> out;
  for (const auto& [name, t] : m.state()) out.push_back(t.to_vector<float>());
  return out;
}

// A model, its optimizer and EMA after a few updates.
struct Trained {
  explicit Trained(uint64_t seed, int steps = 2) : net(seed) {
    OptimizerConfig config;
    config.lr = 1e-2;
    config.weight_decay = 0.1;
    optim = make_optimizer(net.named_parameters(), config);
    ema = std::make_unique<Ema>(net.named_parameters(), 0.9);
    const Tensor x = dcae::testing::random_tensor({3, 4}, seed + 100, DType::f32);
    for (int i = 0; i < steps; ++i) {
      optim->zero_grad();
      autograd::backward(ops::mean(ops::square(net.forward(x))));
      optim->step();
      ema->update();
    }
    Tensor(net.steps_seen).fill_(steps);
  }
  CheckpointItems items() { return {{{"model", &net}}, ema.get(), {{"optim", optim.get()}}, {}}; }
  TinyNet net;
  std::unique_ptr<Optimizer> optim;
  std::unique_ptr<Ema> ema;
};

TrainerState state_at(int64_t step) {
  TrainerState s;
  s.step = step;
  s.rng["data"] = RngState{42, 1000 + static_cast<uint64_t>(step)};
  s.data_position = {{"epoch", 1}, {"index", step * 8}};
  s.schedule = {{"name", "cosine"}};
  s.extra = {{"nonfinite_in_a_row", 0}};
  return s;
}

TEST(Checkpoint, SavesAndLoadsEverythingIntoFreshObjects) {
  ScratchDir dir;
  Trained a(1);
  CheckpointItems items = a.items();
  items.text_files["recipe.toml"] = "[train]\nsteps = 2\n";
  const std::string folder = save_checkpoint(dir.path(), items, state_at(2));
  EXPECT_EQ(fs::path(folder).filename(), "step_00000002");
  for (const char* file : {"model.safetensors", "ema.safetensors", "ema.json", "optim.safetensors", "optim.json",
                           "trainer_state.json", "recipe.toml", "COMPLETE"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(folder) / file)) << file;
  EXPECT_EQ(latest_complete(dir.path()), folder);

  Trained b(2, /*steps=*/1);  // different weights and state
  const TrainerState state = load_checkpoint(folder, b.items());
  EXPECT_EQ(values_of(b.net), values_of(a.net));  // parameters and the buffer
  EXPECT_EQ(b.net.steps_seen.item<int64_t>(), 2);
  EXPECT_EQ(b.ema->num_updates(), 2);
  EXPECT_EQ(b.ema->shadows()[0].second.to_vector<float>(), a.ema->shadows()[0].second.to_vector<float>());
  EXPECT_EQ(b.optim->state("fc1.weight").step, 2);
  EXPECT_EQ(b.optim->state("fc1.weight").slots.at("exp_avg_sq").to_vector<float>(),
            a.optim->state("fc1.weight").slots.at("exp_avg_sq").to_vector<float>());
  EXPECT_EQ(state.step, 2);
  EXPECT_EQ(state.rng.at("data").seed, 42u);
  EXPECT_EQ(state.rng.at("data").offset, 1002u);
  EXPECT_EQ(state.data_position["index"], 16);
  EXPECT_EQ(state.schedule["name"], "cosine");
  EXPECT_EQ(state.extra["nonfinite_in_a_row"], 0);
  Generator gen(0);
  restore_rng(gen, state.rng.at("data"));
  EXPECT_EQ(gen.seed(), 42u);
  EXPECT_EQ(capture_rng(gen).offset, 1002u);
}

TEST(Checkpoint, ACrashMidWriteLeavesNoCompleteCheckpointAndResumeSkipsIt) {
  ScratchDir dir;
  Trained a(3);
  const std::string first = save_checkpoint(dir.path(), a.items(), state_at(10));
  // Crash while the folder is still under its temporary name: no step_ folder at all.
  auto crash_at = [&](const std::string& when) {
    return [when](const std::string& stage) {
      if (stage == when) throw std::runtime_error("simulated crash at " + stage);
    };
  };
  EXPECT_THROW(save_checkpoint(dir.path(), a.items(), state_at(20), crash_at("model.safetensors")), std::runtime_error);
  EXPECT_FALSE(fs::exists(fs::path(dir.path()) / "step_00000020"));
  EXPECT_EQ(latest_complete(dir.path()), first);
  // Crash after the rename, before the marker: the folder exists but is incomplete.
  EXPECT_THROW(save_checkpoint(dir.path(), a.items(), state_at(30), crash_at("renamed")), std::runtime_error);
  const std::string torn = (fs::path(dir.path()) / "step_00000030").string();
  EXPECT_TRUE(fs::is_directory(torn));
  EXPECT_TRUE(fs::is_regular_file(fs::path(torn) / "trainer_state.json"));
  EXPECT_FALSE(is_complete_checkpoint(torn));
  EXPECT_EQ(latest_complete(dir.path()), first);
  EXPECT_EQ(resolve_resume("auto", dir.path()), first);
  EXPECT_NE(error_of([&] { load_checkpoint(torn, a.items()); }).find("is incomplete (no COMPLETE marker)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { resolve_resume(torn, dir.path()); }).find("is not a complete checkpoint"), std::string::npos);

  // The next good save and pruning clear the debris; the torn step 30 is older than the new newest.
  const std::string next = save_checkpoint(dir.path(), a.items(), state_at(40));
  prune_checkpoints(dir.path(), /*keep_last=*/0);
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir.path())) left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"step_00000010", "step_00000040"}));
  EXPECT_EQ(latest_complete(dir.path()), next);
}

TEST(Checkpoint, ReSavingAStepReplacesItOnlyOnceComplete) {
  ScratchDir dir;
  Trained a(4);
  const std::string folder = save_checkpoint(dir.path(), a.items(), state_at(5));
  TrainerState changed = state_at(5);
  changed.extra["marker"] = "second";
  EXPECT_THROW(save_checkpoint(dir.path(), a.items(), changed, [](const std::string& stage) {
                 if (stage == "written") throw std::runtime_error("crash");
               }),
               std::runtime_error);
  EXPECT_TRUE(is_complete_checkpoint(folder));  // the first save survives a failed re-save
  EXPECT_FALSE(load_checkpoint(folder, a.items()).extra.contains("marker"));
  save_checkpoint(dir.path(), a.items(), changed);
  EXPECT_EQ(load_checkpoint(folder, a.items()).extra["marker"], "second");
  EXPECT_EQ(complete_checkpoints(dir.path()).size(), 1u);
}

TEST(Checkpoint, KeepLastDeletesOlderCompleteCheckpoints) {
  ScratchDir dir;
  Trained a(5, 1);
  for (int64_t step = 1; step <= 5; ++step) save_checkpoint(dir.path(), a.items(), state_at(step * 100));
  EXPECT_EQ(complete_checkpoints(dir.path()).size(), 5u);
  const std::vector<std::string> deleted = prune_checkpoints(dir.path(), 2);
  EXPECT_EQ(deleted.size(), 3u);
  std::vector<std::string> kept;
  for (const std::string& path : complete_checkpoints(dir.path())) kept.push_back(fs::path(path).filename().string());
  EXPECT_EQ(kept, (std::vector<std::string>{"step_00000400", "step_00000500"}));
  EXPECT_TRUE(prune_checkpoints(dir.path(), 2).empty());
  EXPECT_EQ(checkpoint_folder_name(123456789), "step_123456789");
  EXPECT_EQ(resolve_resume("none", dir.path()), std::nullopt);
  EXPECT_EQ(resolve_resume("auto", dir.file("empty")), std::nullopt);
  EXPECT_TRUE(prune_checkpoints(dir.file("empty"), 1).empty());
}

TEST(Checkpoint, LoadingValidatesNamesShapesAndDtypesAndChangesNothingOnError) {
  ScratchDir dir;
  Trained a(6);
  const std::string folder = save_checkpoint(dir.path(), a.items(), state_at(1));

  // A model with one more output: fc2 shapes differ.
  class Wider : public nn::Module {
   public:
    Wider() {
      Generator gen(1);
      fc1 = register_module("fc1", std::make_shared<testing::Affine>(4, 6, gen, DType::f32));
      norm = register_module("norm", std::make_shared<testing::Scale>(6, DType::f32));
      fc2 = register_module("fc2", std::make_shared<testing::Affine>(6, 4, gen, DType::f32));
      register_buffer("steps_seen", zeros({}, DType::i64));
    }
    std::shared_ptr<testing::Affine> fc1, fc2;
    std::shared_ptr<testing::Scale> norm;
  } wider;
  const auto before = values_of(wider);
  std::string m = error_of([&] { load_checkpoint(folder, {{{"model", &wider}}, nullptr, {}, {}}); });
  EXPECT_NE(m.find("mismatched: 'fc2.weight' is [3, 6] f32, the model has Tensor[4, 6] f32 cpu, 'fc2.bias' is [3] f32"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
  EXPECT_EQ(values_of(wider), before);

  TinyNet f64(7);
  f64.to(DType::f64);
  m = error_of([&] { load_checkpoint(folder, {{{"model", &f64}}, nullptr, {}, {}}); });
  EXPECT_NE(m.find("'fc1.weight' is [6, 4] f32, the model has Tensor[6, 4] f64 cpu"), std::string::npos) << m;

  class Fewer : public nn::Module {
   public:
    Fewer() {
      Generator gen(1);
      register_module("fc1", std::make_shared<testing::Affine>(4, 6, gen, DType::f32));
    }
  } fewer;
  m = error_of([&] { load_checkpoint(folder, {{{"model", &fewer}}, nullptr, {}, {}}); });
  EXPECT_NE(m.find("in the checkpoint but not the model: 'steps_seen', 'norm.weight', 'fc2.weight', 'fc2.bias'"),
            std::string::npos)
      << m;

  class Renamed : public nn::Module {
   public:
    Renamed() {
      Generator gen(1);
      register_module("fc1", std::make_shared<testing::Affine>(4, 6, gen, DType::f32));
      register_module("gamma", std::make_shared<testing::Scale>(6, DType::f32));
    }
  } renamed;
  m = error_of([&] { load_checkpoint(folder, {{{"model", &renamed}}, nullptr, {}, {}}); });
  EXPECT_NE(m.find("missing from the checkpoint: 'gamma.weight' (Tensor[6] f32 cpu)"), std::string::npos) << m;

  // The optimizer named in the items must be in the checkpoint.
  Trained b(8);
  m = error_of([&] { load_checkpoint(folder, {{{"model", &b.net}}, nullptr, {{"disc_optim", b.optim.get()}}, {}}); });
  EXPECT_NE(m.find("has no disc_optim.safetensors"), std::string::npos) << m;
  m = error_of([&] { load_checkpoint(dir.file("step_00000099"), a.items()); });
  EXPECT_NE(m.find("not found"), std::string::npos) << m;
}

}  // namespace
}  // namespace dcae::trainer
