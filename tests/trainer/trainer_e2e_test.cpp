// dcae-trainer end to end (the real binary; DCAE_BIN names its folder, else the build's): a tiny recipe's run
// folder (metrics rows, PNG grids, checkpoints), exact resume of the whole job, a plugin loss, the non-finite stop
// and recipe errors.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "datasets/png.h"
#include "nn/io/safetensors.h"
#include "tests/trainer/job_testing.h"

namespace dcae::trainer {
namespace {

using testing::ScratchDir;
using testing::write_file;

std::string trainer_binary() {
  if (const char* dir = std::getenv("DCAE_BIN")) return std::string(dir) + "/dcae-trainer";
  return DCAE_TRAINER_BIN;
}

struct TrainerRun {
  int code = -1;
  std::string output;  // stdout and stderr
};

// Runs dcae-trainer on `recipe` (none when empty) with further `args` (shell-quoted by the caller where needed).
TrainerRun run_trainer(const ScratchDir& dir, const std::string& recipe, const std::string& args = "") {
  const std::string log = dir.file("trainer.log");
  std::ostringstream command;  // (not operator+: GCC 12 warns falsely about it here)
  command << "'" << trainer_binary() << "' ";
  if (!recipe.empty()) command << "'" << recipe << "' ";
  command << args << " > '" << log << "' 2>&1";
  const int status = std::system(command.str().c_str());
  TrainerRun run;
  run.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  run.output = text.str();
  return run;
}

std::vector<nlohmann::json> read_rows(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

std::vector<nlohmann::json> rows_of(const std::vector<nlohmann::json>& rows, const std::string& split) {
  std::vector<nlohmann::json> out;
  for (const auto& row : rows)
    if (row.value("split", "") == split) out.push_back(row);
  return out;
}

std::string write_recipe(const ScratchDir& dir, const std::string& name, const std::string& extra = "",
                         const std::string& plugin = "") {
  return write_file(dir.file(name), testing::tiny_recipe_text(dir.file("run"), extra, plugin));
}

TEST(TrainerBinary, TinyRunWritesMetricsGridsAndCheckpoints) {
  ScratchDir dir;
  const std::string recipe = write_recipe(dir, "tiny.toml");
  const TrainerRun run = run_trainer(dir, recipe, "--set checkpoint.keep_last=1 --set train.steps=4");
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("finished at step 4"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("step 4/4 | loss "), std::string::npos) << run.output;  // the progress line

  const auto rows = read_rows(dir.file("run/metrics.jsonl"));
  const auto train = rows_of(rows, "train"), eval = rows_of(rows, "eval");
  ASSERT_EQ(train.size(), 4u);
  for (size_t i = 0; i < train.size(); ++i) {
    EXPECT_EQ(train[i]["step"], static_cast<int64_t>(i + 1));
    for (const char* key : {"loss", "l1", "lr", "img_per_s", "grad_norm", "peak_mem_bytes"})
      EXPECT_TRUE(train[i].contains(key) && train[i][key].is_number()) << key << " in " << train[i].dump();
    EXPECT_GT(train[i]["loss"].get<double>(), 0.0);
  }
  ASSERT_EQ(eval.size(), 3u);  // before training, at step 2 and at the end
  for (size_t i = 0; i < eval.size(); ++i) {
    EXPECT_EQ(eval[i]["step"], static_cast<int64_t>(2 * i));
    EXPECT_GT(eval[i]["psnr"].get<double>(), 3.0);
    EXPECT_GT(eval[i]["ssim"].get<double>(), -1.0);
    EXPECT_LE(eval[i]["ssim"].get<double>(), 1.0);
  }
  // Grids: two held-out originals above their two reconstructions, 16^2 tiles with 2-pixel borders.
  for (const char* grid : {"step_00000000.png", "step_00000002.png", "step_00000004.png"}) {
    const Tensor image = datasets::read_png(dir.file(std::string("run/grids/") + grid));
    EXPECT_EQ(image.shape(), Shape({2 * 18 + 2, 2 * 18 + 2, 3})) << grid;
  }
  // keep_last = 1: only the final checkpoint, complete, with the resolved recipe.
  const auto checkpoints = complete_checkpoints(dir.file("run/checkpoints"));
  ASSERT_EQ(checkpoints.size(), 1u);
  EXPECT_NE(checkpoints[0].find("step_00000004"), std::string::npos);
  for (const char* file : {"model.safetensors", "optim.safetensors", "trainer_state.json", "recipe.toml", "COMPLETE"})
    EXPECT_TRUE(std::filesystem::exists(checkpoints[0] + "/" + file)) << file;
  EXPECT_TRUE(std::filesystem::exists(dir.file("run/recipe.toml")));
}

// Loss columns of the train rows and the eval metrics: everything but timings and memory measurements.
std::vector<nlohmann::json> deterministic_rows(const std::string& path) {
  std::vector<nlohmann::json> out;
  for (auto row : read_rows(path)) {
    for (const char* timing : {"img_per_s", "eta_s", "peak_mem_bytes", "memory"}) row.erase(timing);
    out.push_back(row);
  }
  return out;
}

TEST(TrainerBinary, ResumedRunEqualsAnUninterruptedOneBitForBit) {
  // Everything that carries state: EMA, gradient accumulation, a cosine schedule, BatchNorm in the decoder, the
  // GAN (discriminator with BatchNorm, its optimizer) starting mid-run.
  const std::string extra =
      "[loss]\ngan = 0.5\ngan_start_step = 2\nadaptive_gan_weight = true\ndisc_layers = 1\ndisc_channels = 8\n"
      "[schedule]\nname = \"cosine\"\nwarmup_steps = 2\n";
  const std::string sets = "--set train.steps=6 --set train.grad_accum=2 --set train.ema_decay=0.9 "
                           "--set checkpoint.every=3 --set eval.every=3";
  ScratchDir straight, interrupted;
  const TrainerRun a = run_trainer(straight, write_recipe(straight, "r.toml", extra), sets);
  ASSERT_EQ(a.code, 0) << a.output;
  const std::string recipe = write_recipe(interrupted, "r.toml", extra);
  const TrainerRun b1 = run_trainer(interrupted, recipe, sets + " --stop-at 4");  // dies after step 4
  ASSERT_EQ(b1.code, 0) << b1.output;
  EXPECT_NE(b1.output.find("stopped at step 4"), std::string::npos) << b1.output;
  const TrainerRun b2 = run_trainer(interrupted, recipe, sets);  // resume = "auto": from step 3
  ASSERT_EQ(b2.code, 0) << b2.output;
  EXPECT_NE(b2.output.find("resumed from"), std::string::npos) << b2.output;

  const auto rows_a = deterministic_rows(straight.file("run/metrics.jsonl"));
  const auto rows_b = deterministic_rows(interrupted.file("run/metrics.jsonl"));
  ASSERT_EQ(rows_a.size(), rows_b.size());
  for (size_t i = 0; i < rows_a.size(); ++i) EXPECT_EQ(rows_a[i], rows_b[i]) << "row " << i;  // doubles round-trip
  ASSERT_TRUE(rows_of(rows_a, "train").back().contains("d_loss"));
  // The final checkpoints hold the same tensors.
  for (const char* file : {"model", "ema", "optim", "disc", "disc_optim"}) {
    nn::SafetensorsFile fa(straight.file("run/checkpoints/step_00000006/") + file + ".safetensors");
    nn::SafetensorsFile fb(interrupted.file("run/checkpoints/step_00000006/") + file + ".safetensors");
    ASSERT_EQ(fa.names(), fb.names()) << file;
    for (const std::string& name : fa.names())
      EXPECT_TRUE(testing::bit_identical(fa.load(name), fb.load(name))) << file << ": " << name;
  }
}

TEST(TrainerBinary, TrainsWithAPluginLossAndStopsOnRepeatedNaN) {
  ScratchDir dir;
  const std::string plugin_recipe =
      write_recipe(dir, "plugin.toml", "[loss]\nl1 = 0.0\ntest_scale = 2.0\n[loss.terms]\ntest_scaled_l1 = 1.0\n",
                   DCAE_TEST_LOSS_PLUGIN);
  TrainerRun run = run_trainer(dir, plugin_recipe, "--set train.steps=2 --set eval.every=0");
  ASSERT_EQ(run.code, 0) << run.output;
  const auto train = rows_of(read_rows(dir.file("run/metrics.jsonl")), "train");
  ASSERT_EQ(train.size(), 2u);
  EXPECT_TRUE(train[0].contains("test_scaled_l1"));
  EXPECT_EQ(train[0]["loss"], train[0]["test_scaled_l1"]);

  ScratchDir nan_dir;
  const std::string nan_recipe = write_recipe(
      nan_dir, "nan.toml", "[loss]\nl1 = 0.0\ntest_nan_from = 1\n[loss.terms]\ntest_nan = 1.0\n", DCAE_TEST_LOSS_PLUGIN);
  run = run_trainer(nan_dir, nan_recipe, "--set train.steps=8 --set train.max_nonfinite_steps=2");
  EXPECT_EQ(run.code, 1) << run.output;
  EXPECT_NE(run.output.find("non-finite loss or gradient, update skipped"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("stopping at step 3: 2 non-finite steps in a row"), std::string::npos) << run.output;
  const auto rows = rows_of(read_rows(nan_dir.file("run/metrics.jsonl")), "train");
  ASSERT_EQ(rows.size(), 2u);  // step 1 trained, step 2 skipped, step 3 skipped and stopped the run
  EXPECT_FALSE(rows[0].contains("skipped"));
  EXPECT_EQ(rows[1]["skipped"], true);
  EXPECT_TRUE(rows[1]["loss"].is_null());  // NaN has no JSON form
}

TEST(TrainerBinary, RecipeErrorsStopBeforeAnyWorkNamingKeyAndFile) {
  ScratchDir dir;
  const std::string recipe = write_recipe(dir, "bad.toml", "[loss]\nl2 = 1.0\n");
  TrainerRun run = run_trainer(dir, recipe);
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.output.find("unknown key 'loss.l2'"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("bad.toml"), std::string::npos) << run.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("run")));
  run = run_trainer(dir, write_recipe(dir, "ok.toml"), "--set optim.lr=\\\"fast\\\"");
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.output.find("optim.lr"), std::string::npos) << run.output;
  run = run_trainer(dir, "");
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.output.find("give a recipe"), std::string::npos) << run.output;
  run = run_trainer(dir, "", "--list");
  EXPECT_EQ(run.code, 0);
  EXPECT_NE(run.output.find("losses: gan, l1, lpips, mse"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace dcae::trainer
