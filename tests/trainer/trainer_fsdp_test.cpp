// dcae-trainer with dist.strategy = "fsdp". End to end under `mpirun -np 2` (skipped without MPI): two ranks and
// one rank train like one plain process on the same global batch, Phase-2 frozen parameters stay bit-unchanged,
// and a sharded checkpoint resumes on a different number of ranks (2 -> 1, 1 -> 2) as if never interrupted. In
// process on one rank: the same training as without fsdp, evaluation through the sharded forward, memory by
// category, and sharded checkpoints that are incomplete or corrupt are refused with errors naming them.
// dcae-export consolidates a 2-rank sharded checkpoint into the plain run's model file.
#include <filesystem>

#include "dist/fsdp.h"
#include "dist/sharded_checkpoint.h"
#include "tests/testing/check.h"
#include "tests/testing/tool_run.h"
#include "tests/trainer/trainer_mpi_testing.h"

namespace dcae::trainer {
namespace {

namespace fs = std::filesystem;
using testing::bit_identical;
using testing::error_of;
using testing::RankRun;
using testing::read_text;
using testing::run_trainer;
using testing::ScratchDir;
using testing::train_rows;
using testing::worst_ratio;

// "model.*" (or another prefix) of a sharded checkpoint, reassembled, under the names without the prefix.
std::map<std::string, Tensor> consolidated(const std::string& folder, const std::string& prefix = "model.") {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : dist::consolidate_sharded_checkpoint(folder))
    if (name.rfind(prefix, 0) == 0) out[name.substr(prefix.size())] = t;
  return out;
}

// The tiny job recipe (f4, 16^2 synthetic images) with RMSNorm everywhere (BatchNorm statistics of half a batch
// would differ from one process), two micro-batches per step, clipping that always engages (so the logged
// pre-clip norm must be the global one) and `batch` images per rank.
std::string tiny_args(const ScratchDir& dir, const std::string& out, int batch, const std::string& strategy,
                      const std::string& extra = "") {
  const std::string recipe = dir.file("tiny.toml");
  if (!fs::exists(recipe)) testing::write_file(recipe, testing::tiny_recipe_text(dir.file("unused")));
  std::ostringstream args;
  args << "'" << recipe << "' --out '" << dir.file(out) << "' --set data.batch_size=" << batch
       << " --set train.grad_accum=2 --set 'model.config.decoder_norm_types=\"rms_norm\"' --set dist.strategy="
       << strategy << " --set train.clip_grad_norm=1e-3 --set checkpoint.keep_last=0 " << extra;
  return args.str();
}

std::string step_folder(const ScratchDir& dir, const std::string& out, int step) {
  return dir.file(out + "/checkpoints/" + checkpoint_folder_name(step));
}

class TrainerFsdp : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef DCAE_MPIEXEC
    GTEST_SKIP() << "built without MPI: no mpirun to start two ranks";
#endif
  }
};

TEST_F(TrainerFsdp, TwoRanksAndOneRankTrainLikeOneProcessOnTheGlobalBatch) {
  ScratchDir dir;
  const std::string steps = "--set train.steps=3";
  const RankRun two = run_trainer(dir, 2, tiny_args(dir, "two", 2, "fsdp", steps), "two");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_NE(two.output.find("fsdp over 2 rank(s) (mpi): 6 units"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("memory (rank 0): params"), std::string::npos) << two.output;
  const RankRun one = run_trainer(dir, 1, tiny_args(dir, "one", 4, "fsdp", steps), "one");
  ASSERT_EQ(one.code, 0) << one.output;
  const RankRun plain = run_trainer(dir, 1, tiny_args(dir, "plain", 4, "ddp", steps), "plain");
  ASSERT_EQ(plain.code, 0) << plain.output;

  // Both ranks end with the same gathered parameters; only rank 0 writes metrics.
  const std::string digest = read_text(dir.file("two/param_digest.rank0"));
  ASSERT_FALSE(digest.empty());
  EXPECT_EQ(digest, read_text(dir.file("two/param_digest.rank1")));
  EXPECT_FALSE(fs::exists(dir.file("two/metrics.rank1.jsonl")));

  // Sharded checkpoints (one file per rank + manifest + COMPLETE) hold the plain run's parameters.
  const std::string plain_model = step_folder(dir, "plain", 3) + "/model.safetensors";
  for (const char* run : {"two", "one"}) {
    const std::string folder = step_folder(dir, run, 3);
    ASSERT_TRUE(dist::is_complete_sharded_checkpoint(folder)) << folder;
    EXPECT_EQ(dist::read_sharded_manifest(folder).world_size, std::string(run) == "two" ? 2 : 1);
    const double worst = worst_ratio(consolidated(folder), testing::read_safetensors(plain_model), 1e-5, 1e-3);
    EXPECT_LE(worst, 1.0) << run;
    std::printf("%s: worst |fsdp - plain| / (1e-5 + 1e-3 |plain|) = %.3g\n", run, worst);
  }

  // dcae-export consolidates the 2-rank checkpoint into one model file (the architecture from a config.json).
  const Recipe recipe = load_job_recipe(dir.file("tiny.toml"), {"model.config.decoder_norm_types=\"rms_norm\""});
  const std::string config = testing::write_file(
      dir.file("config.json"),
      nn::dcae_model::config_to_json(dcae_config_with_overrides("dc-ae-custom", recipe.at("model.config"))));
  const auto exported = dcae::testing::run_built_tool(
      "dcae-export",
      "--checkpoint '" + step_folder(dir, "two", 3) + "' --config '" + config + "' --format safetensors --out '" +
          dir.file("exported.safetensors") + "'",
      dir.file("export.log"));
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_NE(exported.output.find("written by 2 rank(s)"), std::string::npos) << exported.output;
  EXPECT_LE(worst_ratio(dir.file("exported.safetensors"), plain_model, 1e-5, 1e-3), 1.0);

  // Logged losses and the pre-clip gradient norm are global: equal to the plain run's.
  const auto two_rows = train_rows(dir.file("two/metrics.jsonl")), one_rows = train_rows(dir.file("one/metrics.jsonl")),
             plain_rows = train_rows(dir.file("plain/metrics.jsonl"));
  ASSERT_EQ(two_rows.size(), 3u);
  ASSERT_EQ(plain_rows.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    for (const char* key : {"loss", "grad_norm"})
      EXPECT_NEAR(two_rows[i][key].get<double>(), plain_rows[i][key].get<double>(),
                  1e-4 * std::abs(plain_rows[i][key].get<double>()))
          << key << " at step " << i + 1;

  // Memory by category: shards, gradients and optimizer state halve with two ranks (up to row padding).
  const nlohmann::json& m2 = two_rows.back()["memory"];
  const nlohmann::json& m1 = one_rows.back()["memory"];
  for (const char* key : {"parameters", "optimizer_state"}) {
    EXPECT_GT(m1[key].get<int64_t>(), 0) << key;
    EXPECT_LE(m2[key].get<int64_t>(), 0.55 * m1[key].get<double>()) << key;
    EXPECT_GE(m2[key].get<int64_t>(), 0.5 * m1[key].get<double>()) << key;
  }
  EXPECT_GT(m2["activations"].get<int64_t>(), 0);
  EXPECT_EQ(m2["gathered_parameters"].get<int64_t>(), 0);  // nothing stays gathered between steps
  EXPECT_GT(m2["communication_peak"].get<int64_t>(), 0);
  EXPECT_GT(plain_rows.back()["memory"]["parameters"].get<int64_t>(), m2["parameters"].get<int64_t>());
}

TEST_F(TrainerFsdp, Phase2FrozenParametersStayBitUnchanged) {
  ScratchDir dir;
  const std::string phase2 = "--set train.steps=2 --set 'train.trainable=" + testing::globs_toml(testing::tiny_phase2_globs()) + "'";
  const RankRun two = run_trainer(dir, 2, tiny_args(dir, "two", 2, "fsdp", phase2), "two");
  ASSERT_EQ(two.code, 0) << two.output;
  const RankRun plain = run_trainer(dir, 1, tiny_args(dir, "plain", 4, "ddp", phase2), "plain");
  ASSERT_EQ(plain.code, 0) << plain.output;
  // The plain run never touches its frozen parameters: they are the initial values.
  const auto expected = testing::read_safetensors(step_folder(dir, "plain", 2) + "/model.safetensors");
  const auto actual = consolidated(step_folder(dir, "two", 2));
  int64_t frozen = 0;
  for (const auto& [name, value] : actual) {
    bool trains = false;
    for (const std::string& glob : testing::tiny_phase2_globs()) trains = trains || nn::glob_match(glob, name);
    if (trains) continue;
    ++frozen;
    EXPECT_TRUE(bit_identical(value, expected.at(name))) << name << " changed";
  }
  EXPECT_GT(frozen, 20);
  EXPECT_LE(worst_ratio(actual, expected, 1e-5, 1e-3), 1.0);
  // Only trainable shards have gradients and optimizer state (two fp32 slots per trainable element).
  const nlohmann::json memory = train_rows(dir.file("two/metrics.jsonl")).back()["memory"];
  EXPECT_EQ(memory["optimizer_state"].get<int64_t>(), 2 * memory["gradients"].get<int64_t>());
  EXPECT_LT(memory["gradients"].get<int64_t>(), memory["parameters"].get<int64_t>());
}

TEST_F(TrainerFsdp, ReshardedResumeContinuesLikeAnUninterruptedRun) {
  ScratchDir dir;
  const std::string ema = "--set train.ema_decay=0.9 ";
  const RankRun straight = run_trainer(dir, 2, tiny_args(dir, "straight", 2, "fsdp", ema), "straight");
  ASSERT_EQ(straight.code, 0) << straight.output;
  // 2 -> 1: two ranks stop after the step-2 checkpoint, one rank (twice the batch) finishes.
  RankRun first = run_trainer(dir, 2, tiny_args(dir, "down", 2, "fsdp", ema + "--stop-at 2"), "down_a");
  ASSERT_EQ(first.code, 0) << first.output;
  RankRun second = run_trainer(dir, 1, tiny_args(dir, "down", 4, "fsdp", ema), "down_b");
  ASSERT_EQ(second.code, 0) << second.output;
  EXPECT_NE(second.output.find("written by 2 rank(s), loaded on 1"), std::string::npos) << second.output;
  // 1 -> 2.
  first = run_trainer(dir, 1, tiny_args(dir, "up", 4, "fsdp", ema + "--stop-at 2"), "up_a");
  ASSERT_EQ(first.code, 0) << first.output;
  second = run_trainer(dir, 2, tiny_args(dir, "up", 2, "fsdp", ema), "up_b");
  ASSERT_EQ(second.code, 0) << second.output;
  EXPECT_NE(second.output.find("written by 1 rank(s), loaded on 2"), std::string::npos) << second.output;

  const std::string reference = step_folder(dir, "straight", 4);
  for (const char* run : {"down", "up"}) {
    const std::string folder = step_folder(dir, run, 4);
    ASSERT_TRUE(dist::is_complete_sharded_checkpoint(folder)) << folder;
    for (const char* part : {"model.", "ema.", "optim."}) {
      const auto actual = consolidated(folder, part), expected = consolidated(reference, part);
      EXPECT_EQ(actual.size(), expected.size()) << run << " " << part;
      EXPECT_FALSE(actual.empty()) << run << " " << part;
      EXPECT_LE(worst_ratio(actual, expected, 1e-5, 1e-3), 1.0) << run << " " << part;
    }
  }
}

// One rank, in process: fsdp (with a BatchNorm decoder stage, replicated buffers) trains exactly like the plain job.
TEST(TrainerFsdpOneRank, TrainsLikeThePlainJobEvaluatesThroughTheShardedForwardAndReportsMemory) {
  ScratchDir dir;
  Recipe plain_recipe = testing::tiny_recipe(dir, {"log.dir=\"" + dir.file("plain") + "\""}, "", "plain.toml");
  Recipe fsdp_recipe = testing::tiny_recipe(dir, {"log.dir=\"" + dir.file("fsdp") + "\"", "dist.strategy=\"fsdp\""},
                                            "", "fsdp.toml");
  DcaeJob plain(plain_recipe), sharded(fsdp_recipe);
  ASSERT_NE(sharded.fsdp(), nullptr);
  EXPECT_EQ(plain.fsdp(), nullptr);
  const JobSummary a = plain.run(), b = sharded.run();
  ASSERT_EQ(a.evals.size(), b.evals.size());
  for (size_t i = 0; i < a.evals.size(); ++i) EXPECT_NEAR(a.evals[i].psnr, b.evals[i].psnr, 1e-3) << i;

  std::map<std::string, Tensor> gathered, expected;
  for (auto& [name, t] : sharded.fsdp()->gather_full_parameters()) gathered[name] = t;
  for (auto& [name, t] : plain.model().named_parameters()) expected[name] = t;
  EXPECT_LE(worst_ratio(gathered, expected, 1e-6, 1e-4), 1.0);
  // BatchNorm statistics stay on the model (replicated), moved by the same batches.
  const auto plain_buffers = plain.model().named_buffers(), sharded_buffers = sharded.model().named_buffers();
  ASSERT_EQ(plain_buffers.size(), sharded_buffers.size());
  ASSERT_FALSE(plain_buffers.empty());
  for (size_t i = 0; i < plain_buffers.size(); ++i)
    EXPECT_TRUE(dcae::testing::all_close(sharded_buffers[i].second.to(DType::f64),
                                         plain_buffers[i].second.to(DType::f64), 1e-6, 1e-4))
        << plain_buffers[i].first;

  // Each stage ran through its forward hook: one backward gather per training step, none for evaluations.
  for (const auto& unit : sharded.fsdp()->units()) {
    if (unit.name == "<root>") continue;
    EXPECT_TRUE(unit.wrapped) << unit.name;
    EXPECT_EQ(unit.backward_gathers, 4) << unit.name;
    EXPECT_EQ(unit.reduce_scatters, 4) << unit.name;
    EXPECT_FALSE(unit.gathered) << unit.name;
  }
  const dist::MemoryStats memory = sharded.memory_by_category(), replicated = plain.memory_by_category();
  EXPECT_EQ(memory.gathered_parameters, 0);
  EXPECT_GT(memory.activations, 0);
  EXPECT_GT(replicated.activations, 0);
  EXPECT_EQ(memory.optimizer_state, replicated.optimizer_state);  // one rank: the same AdamW state (no padding)
  const auto rows = train_rows(dir.file("fsdp/metrics.jsonl"));
  ASSERT_FALSE(rows.empty());
  for (const char* key : {"parameters", "gradients", "optimizer_state", "activations", "communication_buffers"})
    EXPECT_TRUE(rows.back()["memory"].contains(key)) << key;
}

TEST(TrainerFsdpOneRank, IncompleteOrCorruptShardedCheckpointsAreRefusedByName) {
  ScratchDir dir;
  const std::vector<std::string> fsdp = {"dist.strategy=\"fsdp\"", "train.steps=2"};
  DcaeJob(testing::tiny_recipe(dir, fsdp)).run();
  const std::string folder = dir.file("run/checkpoints/step_00000002");
  ASSERT_TRUE(dist::is_complete_sharded_checkpoint(folder));
  auto with = [&](std::vector<std::string> overrides, const std::string& more) {
    overrides.push_back(more);
    return overrides;
  };

  // The job itself resumes from it; a DDP job refuses it by name.
  EXPECT_EQ(DcaeJob(testing::tiny_recipe(dir, fsdp)).step(), 2);
  EXPECT_NE(error_of([&] { DcaeJob job(testing::tiny_recipe(dir, {"train.steps=2"})); }).find("is sharded"),
            std::string::npos);

  // No COMPLETE marker: "auto" skips it (an interrupted save), naming it explicitly is an error.
  fs::rename(fs::path(folder) / "COMPLETE", dir.file("COMPLETE.saved"));
  EXPECT_EQ(DcaeJob(testing::tiny_recipe(dir, fsdp)).step(), 0);
  std::string error = error_of([&] { DcaeJob job(testing::tiny_recipe(dir, with(fsdp, "checkpoint.resume=\"" + folder + "\""))); });
  EXPECT_NE(error.find("is not a complete checkpoint folder"), std::string::npos) << error;
  error = error_of([&] { dist::consolidate_sharded_checkpoint(folder); });
  EXPECT_NE(error.find("not a complete sharded checkpoint"), std::string::npos) << error;
  fs::rename(dir.file("COMPLETE.saved"), fs::path(folder) / "COMPLETE");

  // An interrupted sharded save leaves step_XXXXXXXX.partial: pruning removes it, never the complete folder.
  fs::create_directories(dir.file("run/checkpoints/step_00000001.partial"));
  const auto deleted = prune_checkpoints(dir.file("run/checkpoints"), 0);
  ASSERT_EQ(deleted.size(), 1u);
  EXPECT_NE(deleted[0].find("step_00000001.partial"), std::string::npos);
  EXPECT_TRUE(dist::is_complete_sharded_checkpoint(folder));

  // A corrupt manifest: not JSON, or JSON without the tensor table.
  const std::string manifest = (fs::path(folder) / "manifest.json").string();
  const std::string text = read_text(manifest);
  testing::write_file(manifest, text.substr(0, text.size() / 2));
  error = error_of([&] { DcaeJob job(testing::tiny_recipe(dir, fsdp)); });
  EXPECT_NE(error.find("manifest.json' is not valid JSON"), std::string::npos) << error;
  testing::write_file(manifest, R"({"format": "dcae-sharded-checkpoint", "world_size": 1})");
  error = error_of([&] { DcaeJob job(testing::tiny_recipe(dir, fsdp)); });
  EXPECT_NE(error.find("is malformed"), std::string::npos) << error;
}

TEST(TrainerFsdpOneRank, RecipeKeysAreValidated) {
  ScratchDir dir;
  std::string error = error_of([&] { testing::tiny_recipe(dir, {"dist.strategy=\"fsdp\"", "loss.gan=0.1"}); });
  EXPECT_NE(error.find("does not shard"), std::string::npos) << error;
  error = error_of([&] {
    DcaeJob job(testing::tiny_recipe(dir, {"dist.strategy=\"fsdp\"", "dist.fsdp.units=[\"decoder.nope.*\"]"}));
  });
  EXPECT_NE(error.find("dist.fsdp"), std::string::npos) << error;
  EXPECT_NE(error.find("'decoder.nope.*' matches no module"), std::string::npos) << error;
  error = error_of([&] { testing::tiny_recipe(dir, {"dist.fsdp.prefetch=3"}); });
  EXPECT_NE(error.find("dist.fsdp.prefetch"), std::string::npos) << error;
  error = error_of([&] { testing::tiny_recipe(dir, {"dist.fsdp.reduce_dtype=\"fp8\""}); });
  EXPECT_NE(error.find("dist.fsdp.reduce_dtype"), std::string::npos) << error;
  // bf16 reduction trains too (one rank: the same steps, gradients rounded to bf16 on the way).
  DcaeJob bf16_reduce(testing::tiny_recipe(dir, {"dist.strategy=\"fsdp\"", "dist.fsdp.reduce_dtype=\"bf16\"",
                                                 "train.steps=1", "train.grad_accum=2", "eval.every=0"}));
  EXPECT_FALSE(bf16_reduce.train_step().skipped);
}

}  // namespace
}  // namespace dcae::trainer
