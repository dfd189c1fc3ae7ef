// The diffusion job end to end: the tiny recipe through dcae-trainer (loss falls, samples land on their class's
// pattern), exact resume, latent shards (labels, rescaling), sample grids through a frozen decoder, and recipe
// errors that name the key.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "datasets/latent_shard.h"
#include "nn/io/safetensors.h"
#include "tests/testing/check.h"
#include "tests/testing/tool_run.h"
#include "tests/trainer/trainer_mpi_testing.h"
#include "tests/trainer/trainer_testing.h"
#include "trainer/diffusion/diffusion_job.h"
#include "trainer/registries.h"

namespace dcae::trainer::diffusion {
namespace {

using trainer::testing::ScratchDir;
using trainer::testing::write_file;

// A small recipe: the tiny denoiser on synthetic 4x4x2 latents of 3 classes, 2 steps per checkpoint.
std::string recipe_text(const std::string& run_dir, const std::string& objective = "ddpm", bool learn_sigma = true) {
  std::ostringstream out;
  out << "job = \"diffusion\"\n"
      << "[model]\nname = \"tiny-conv-denoiser\"\nnum_classes = 3\n"
      << "[model.config]\nwidth = 8\nblocks = 1\nlearn_sigma = " << (learn_sigma ? "true" : "false") << "\n"
      << "[diffusion]\nobjective = \"" << objective << "\"\nsample_steps = 4\ncfg_scale = 2.0\n"
      << "[data]\nsynthetic = true\nsynthetic_latents = 24\nlatent_channels = 2\nlatent_size = 4\nbatch_size = 4\n"
      << "[optim]\nlr = 1e-3\n[schedule]\nwarmup_steps = 2\n"
      << "[train]\nsteps = 6\ndevice = \"cpu\"\nema_decay = 0.9\nseed = 3\n"
      << "[eval]\nevery = 3\nsamples = 3\n"
      << "[checkpoint]\nevery = 3\nkeep_last = 0\n"
      << "[log]\nevery = 1\ndir = \"" << run_dir << "\"\n";
  return out.str();
}

Recipe load(const ScratchDir& dir, const std::string& text, const std::vector<std::string>& overrides = {}) {
  return load_job_recipe(write_file(dir.file("recipe.toml"), text), overrides);
}

std::vector<nlohmann::json> rows(const std::string& path, const std::string& split) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && nlohmann::json::parse(line).value("split", "") == split) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::map<std::string, std::vector<float>> parameters(DiffusionJob& job) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, t] : job.model().named_parameters()) out[name] = t.to(DType::f32).to_vector<float>();
  return out;
}

TEST(DiffusionJob, ResumeContinuesBitForBit) {
  // bf16 weights with fp32 masters too: the masters, the EMA and the loss scaler state travel in the checkpoint.
  for (const auto& [objective, precision] : std::vector<std::pair<std::string, std::string>>{
           {"ddpm", "fp32"}, {"flow-matching", "fp32"}, {"ddpm", "bf16"}}) {
    ScratchDir dir;
    const bool sigma = objective == "ddpm";
    const std::vector<std::string> set = {"train.precision=" + precision};
    DiffusionJob straight(load(dir, recipe_text(dir.file("a"), objective, sigma), set));
    straight.run();
    JobOptions stop;
    stop.stop_at = 3;
    {
      DiffusionJob first(load(dir, recipe_text(dir.file("b"), objective, sigma), set), stop);
      EXPECT_TRUE(first.run().interrupted);
    }
    DiffusionJob resumed(load(dir, recipe_text(dir.file("b"), objective, sigma), set));
    ASSERT_TRUE(resumed.resumed_from().has_value());
    EXPECT_EQ(resumed.step(), 3);
    resumed.run();
    EXPECT_EQ(parameters(resumed), parameters(straight)) << objective << " " << precision;
    // The metrics read as one run: the same train losses, step by step.
    const auto a = rows(dir.file("a/metrics.jsonl"), "train"), b = rows(dir.file("b/metrics.jsonl"), "train");
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), 6u);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << objective << " row " << i;
    // Samples (EMA weights, fixed noise) at the final step agree too.
    const nn::SafetensorsFile sa(dir.file("a/samples/step_00000006.safetensors"));
    const nn::SafetensorsFile sb(dir.file("b/samples/step_00000006.safetensors"));
    EXPECT_TRUE(dcae::testing::all_close(sa.load("latents"), sb.load("latents"), 0, 0));
    EXPECT_EQ(sa.load("latents").shape(), (Shape{3, 4, 4, 2}));
  }
}

TEST(DiffusionJob, TrainsOnLatentShardsAtTheRecipesScalingFactor) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.file("latents"));
  // Two shards stored at scaling factor 0.5; the recipe trains at 1.0, so every latent is doubled.
  std::vector<Tensor> written;
  for (int shard = 0; shard < 2; ++shard) {
    datasets::LatentShardAttributes attributes;
    attributes.scaling_factor = 0.5;
    datasets::LatentShardWriter writer(dir.file("latents/shard-" + std::to_string(shard) + ".h5"), attributes);
    for (int i = 0; i < 5; ++i) {
      const Tensor latent = dcae::testing::random_tensor({4, 4, 2}, 100 + shard * 10 + i, DType::f32);
      writer.append(latent, (shard * 5 + i) % 3, "img" + std::to_string(i));
      written.push_back(latent);
    }
    writer.close();
  }
  const Recipe recipe = load(dir, recipe_text(dir.file("run")),
                             {"data.synthetic=false", "data.latent_shards=\"" + dir.file("latents") + "\"",
                              "diffusion.scaling_factor=1.0", "data.shuffle=false", "data.batch_size=10"});
  LatentDataSpec spec;
  spec.recipe = &recipe;
  spec.batch_size = 10;
  spec.num_classes = 3;
  spec.scaling_factor = 1.0;
  const auto source = make_latent_shard_source(spec);
  EXPECT_EQ(source->size(), 10);
  EXPECT_EQ(source->stored_scaling_factor(), 0.5);
  const LatentBatch batch = source->next();
  for (int i = 0; i < 10; ++i) {
    std::vector<float> doubled = written[i].to_vector<float>();
    for (float& v : doubled) v *= 2.0f;
    EXPECT_EQ(batch.latents.select(0, i).contiguous().to_vector<float>(), doubled) << i;  // stored x 0.5, trained x 1
    EXPECT_EQ(batch.labels.to_vector<int64_t>()[i], i % 3);
  }
  // The job trains on them, at the recipe's factor.
  DiffusionJob job(recipe);
  EXPECT_EQ(job.scaling_factor(), 1.0);
  EXPECT_FALSE(job.train_step().skipped);
  // Without the recipe's factor the shards' stored one is used.
  EXPECT_EQ(resolve_scaling_factor(load(dir, recipe_text(dir.file("run"))), 0.5), 0.5);
  // Labels outside the model's classes are refused, naming the key.
  dcae::testing::expect_error(
      [&] { DiffusionJob(load(dir, recipe_text(dir.file("run2")), {"data.synthetic=false", "data.latent_shards=\"" + dir.file("latents") + "\"", "model.num_classes=2"})).train_step(); },
      {"label 2", "model.num_classes = 2"});
}

TEST(DiffusionJob, DecodesSamplesWithTheFrozenDecoderToAPng) {
  ScratchDir dir;
  const std::string decoder = R"(
[decoder]
name = "dc-ae-custom"
[decoder.config]
latent_channels = 2
attention_head_dim = 8
encoder_block_out_channels = [8, 8]
decoder_block_out_channels = [8, 8]
encoder_block_types = ["ResBlock", "ResBlock"]
decoder_block_types = ["ResBlock", "ResBlock"]
encoder_layers_per_block = [1, 1]
decoder_layers_per_block = [1, 1]
encoder_qkv_multiscales = [[], []]
decoder_qkv_multiscales = [[], []]
)";
  DiffusionJob job(load(dir, recipe_text(dir.file("run")) + decoder, {"diffusion.scaling_factor=0.5"}));
  const SampleResult result = job.evaluate();
  ASSERT_FALSE(result.path.empty());
  EXPECT_EQ(std::filesystem::path(result.path).extension(), ".png");
  EXPECT_TRUE(std::filesystem::exists(result.path));
  for (const auto& [name, p] : job.optimizer().named_masters()) EXPECT_EQ(name.rfind("decoder", 0), std::string::npos);
  // A published decoder needs its weights.
  dcae::testing::expect_error([&] { load(dir, recipe_text(dir.file("run")), {"decoder.name=dc-ae-f32c32-in-1.0"}); },
                              {"decoder.init_from"});
}

TEST(DiffusionJob, RecipeErrorsNameTheKey) {
  ScratchDir dir;
  const std::string text = recipe_text(dir.file("run"));
  dcae::testing::expect_error([&] { load(dir, text, {"diffusion.objectiv=ddpm"}); }, {"diffusion.objectiv"});
  dcae::testing::expect_error([&] { load(dir, text, {"diffusion.label_dropout=1.5"}); }, {"diffusion.label_dropout"});
  dcae::testing::expect_error([&] { load(dir, text, {"job=diffuse"}); }, {"job", "diffuse"});
  dcae::testing::expect_error([&] { load(dir, text, {"data.synthetic=false"}); }, {"data.latent_shards"});
  dcae::testing::expect_error([&] { DiffusionJob(load(dir, text, {"diffusion.objective=ddim"})); },
                              {"unknown diffusion objective 'ddim'", "flow-matching"});
  dcae::testing::expect_error([&] { DiffusionJob(load(dir, text, {"diffusion.sampler=euler"})); },
                              {"diffusion.sampler = \"euler\"", "diffusion.objective = \"ddpm\""});
  // The recipe's denoiser predicts a variance; flow matching cannot use one.
  dcae::testing::expect_error([&] { DiffusionJob(load(dir, text, {"diffusion.objective=flow-matching"})); },
                              {"a learned variance", "diffusion.objective = \"flow-matching\""});
  dcae::testing::expect_error([&] { DiffusionJob(load(dir, text, {"model.name=dit-xxl"})); },
                              {"unknown denoiser 'dit-xxl'", "tiny-conv-denoiser"});
  dcae::testing::expect_error([&] { DiffusionJob(load(dir, text, {"model.config.depth=3"})); }, {"model.config.depth"});
  // A DC-AE key in a diffusion recipe is unknown there (and the other way round).
  dcae::testing::expect_error([&] { load(dir, text, {"loss.l1=1.0"}); }, {"loss"});
}

// The CI recipe, run by dcae-trainer as a user would: the loss falls and the EMA samples of each class land near
// that class's pattern (the synthetic data's mean).
TEST(DiffusionJob, TinyRecipeLearnsTheClassPatterns) {
  ScratchDir dir;
  const std::string recipe = std::string(DCAE_SOURCE_DIR) + "/recipes/tiny_diffusion.toml";
  // One OpenMP thread: the tensors are tiny, and spinning worker threads on a busy CI machine cost 10x (measured).
  ::setenv("OMP_NUM_THREADS", "1", 1);
  const auto run = dcae::testing::run_built_tool("dcae-trainer", "'" + recipe + "' --out '" + dir.file("run") + "'",
                                                 dir.file("log.txt"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto train = rows(dir.file("run/metrics.jsonl"), "train");
  ASSERT_GE(train.size(), 4u);
  const double first = train.front()["loss"], last = train.back()["loss"];
  EXPECT_LT(last, 0.3 * first) << "loss " << first << " -> " << last;
  const Recipe r = load_job_recipe(recipe);
  std::string newest;  // the final evaluation's samples
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("run/samples")))
    newest = std::max(newest, entry.path().string());
  const nn::SafetensorsFile file(newest);
  const Tensor samples = file.load("latents");
  const int64_t n = samples.size(0), size = r.get<int64_t>("data.latent_size"), c = r.get<int64_t>("data.latent_channels");
  double to_own = 0.0, to_other = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> s = samples.select(0, i).contiguous().to_vector<float>();
    auto rms_to = [&](int64_t label) {
      const std::vector<float> p = synthetic_class_pattern(label, c, size).to_vector<float>();
      double sq = 0.0;
      for (size_t e = 0; e < p.size(); ++e) sq += (s[e] - p[e]) * (s[e] - p[e]);
      return std::sqrt(sq / p.size());
    };
    to_own += rms_to(i % 10) / n;
    to_other += rms_to((i + 1) % 10) / n;
  }
  // The patterns have RMS 0.92 and differ by about 1.3 RMS between classes; the data's own noise is 0.3.
  // Measured: 0.38 to the own pattern, 1.33 to the next class's (an untrained denoiser's samples: about 1.1 to both).
  EXPECT_LT(to_own, 0.5) << "mean RMS distance of the samples to their own class's pattern";
  EXPECT_GT(to_other, 2.5 * to_own) << "to the next class's pattern";
}

}  // namespace
}  // namespace dcae::trainer::diffusion

namespace dcae::trainer::diffusion {
namespace {

// The paper's training commands as shipped recipes (the networks themselves come from nn/diffusion's zoo).
TEST(DiffusionRecipes, ShippedRecipesCarryThePapersCommands) {
  const std::string root = std::string(DCAE_SOURCE_DIR) + "/recipes/";
  struct Expected {
    std::string file, model, objective, sampler;
    double lr, weight_decay, beta1, beta2, cfg, sf;
    int64_t global_batch, warmup;
    std::string precision;
  };
  const std::vector<Expected> expected = {
      {"diffusion_usit_h_f32.toml", "usit-h", "flow-matching", "dopri5", 1e-4, 0.0, 0.99, 0.99, 1.2, 0.3189, 1024, 5000, "bf16"},
      {"diffusion_uvit_h_f64.toml", "uvit-h", "uvit-ddpm", "dpm-solver++", 2e-4, 0.03, 0.99, 0.99, 1.5, 0.2889, 1024, 5000, "bf16"},
      {"diffusion_dit_xl_f32.toml", "dit-xl", "ddpm", "ddpm", 1e-4, 0.0, 0.9, 0.999, 1.3, 0.3189, 256, 0, "fp16"},
  };
  for (const Expected& e : expected) {
    SCOPED_TRACE(e.file);
    const Recipe r = load_job_recipe(root + e.file);
    EXPECT_EQ(r.get<std::string>("job"), "diffusion");
    EXPECT_EQ(r.get<std::string>("model.name"), e.model);
    EXPECT_EQ(r.get<std::string>("diffusion.objective"), e.objective);
    EXPECT_EQ(r.get<std::string>("diffusion.sampler"), e.sampler);
    EXPECT_EQ(r.get<double>("optim.lr"), e.lr);
    EXPECT_EQ(r.get<double>("optim.weight_decay"), e.weight_decay);
    EXPECT_EQ(r.get<std::vector<double>>("optim.betas"), (std::vector<double>{e.beta1, e.beta2}));
    EXPECT_EQ(r.get<double>("diffusion.cfg_scale"), e.cfg);
    EXPECT_EQ(r.get<double>("diffusion.scaling_factor"), e.sf);
    EXPECT_EQ(r.get<double>("diffusion.label_dropout"), 0.1);
    EXPECT_EQ(r.get<int64_t>("data.batch_size") * 8, e.global_batch);  // on 8 GPUs
    EXPECT_EQ(r.get<std::string>("schedule.name"), "constant");
    EXPECT_EQ(r.get<int64_t>("schedule.warmup_steps"), e.warmup);
    EXPECT_EQ(r.get<std::string>("train.precision"), e.precision);
    EXPECT_EQ(r.get<double>("train.ema_decay"), 0.9999);
    // The scaling factor is the decoder's published one.
    EXPECT_EQ(dcae_config_with_overrides(r.get<std::string>("decoder.name"), r.at("decoder.config")).scaling_factor, e.sf);
    // The objective and sampler exist and fit together.
    ObjectiveSpec spec;
    spec.name = e.objective;
    const auto objective = registries().diffusion_objectives.create(e.objective, spec);
    SamplerSpec sampler;
    sampler.name = e.sampler;
    sampler.steps = r.get<int64_t>("diffusion.sample_steps");
    sampler.objective = objective.get();
    EXPECT_NO_THROW(registries().diffusion_samplers.create(e.sampler, sampler));
  }
}

}  // namespace
}  // namespace dcae::trainer::diffusion

namespace dcae::trainer::diffusion {
namespace {

// Two ranks under mpirun: data parallel training ends with identical denoisers on both ranks.
TEST(DiffusionJobDdp, TwoRanksEndWithIdenticalReplicas) {
#ifndef DCAE_MPIEXEC
  GTEST_SKIP() << "built without MPI";
#else
  trainer::testing::ScratchDir dir;
  const std::string recipe = std::string(DCAE_SOURCE_DIR) + "/recipes/tiny_diffusion.toml";
  const auto run = trainer::testing::run_trainer(
      dir, 2, "'" + recipe + "' --out '" + dir.file("run") + "' --set train.steps=12 --set eval.every=6 " +
                  "--set checkpoint.every=6 --set log.every=4 --set data.batch_size=8");
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("data parallel over 2 ranks"), std::string::npos) << run.output;
  const std::string digest0 = trainer::testing::read_text(dir.file("run/param_digest.rank0"));
  ASSERT_FALSE(digest0.empty());
  EXPECT_EQ(digest0, trainer::testing::read_text(dir.file("run/param_digest.rank1")));
  const auto rows = trainer::testing::train_rows(dir.file("run/metrics.jsonl"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows.back()["step"], 12);
  EXPECT_TRUE(std::filesystem::exists(dir.file("run/samples/step_00000012.safetensors")));
#endif
}

}  // namespace
}  // namespace dcae::trainer::diffusion

namespace dcae::trainer::diffusion {
namespace {

// The transformers of nn/diffusion's zoo, shrunk through model.config, train and sample in the job: DiT with its
// learned variance (hybrid loss), UViT with its objective and DPM-Solver++, USiT with flow matching and Heun.
TEST(DiffusionJob, ZooTransformersTrainAndSample) {
  struct Case {
    std::string model, objective, config;
  };
  const std::vector<Case> cases = {
      {"dit-s", "ddpm", "{hidden_size = 32, depth = 2, num_heads = 2, learn_sigma = true}"},
      {"uvit-s", "uvit-ddpm", "{hidden_size = 32, depth = 2, num_heads = 2}"},
      {"usit-h", "flow-matching", "{hidden_size = 32, depth = 2, num_heads = 2}"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.model);
    ScratchDir dir;
    std::string text = recipe_text(dir.file("run"), c.objective);
    text.replace(text.find("name = \"tiny-conv-denoiser\""), std::string("name = \"tiny-conv-denoiser\"").size(),
                 "name = \"" + c.model + "\"");
    text.replace(text.find("[model.config]\nwidth = 8\nblocks = 1\nlearn_sigma = true\n"),
                 std::string("[model.config]\nwidth = 8\nblocks = 1\nlearn_sigma = true\n").size(), "");
    DiffusionJob job(load(dir, text, {"model.config=" + c.config, "diffusion.sampler=\"\""}));
    const StepResult step = job.train_step();
    EXPECT_FALSE(step.skipped);
    EXPECT_TRUE(std::isfinite(step.losses.front().second));
    EXPECT_EQ(step.losses.size(), c.objective == "ddpm" ? 3u : 2u);  // loss, mse (, vb)
    const SampleResult samples = job.evaluate();
    EXPECT_TRUE(std::isfinite(samples.mean) && std::isfinite(samples.std));
    EXPECT_EQ(samples.latents.shape(), (Shape{3, 4, 4, 2}));
  }
}

}  // namespace
}  // namespace dcae::trainer::diffusion
