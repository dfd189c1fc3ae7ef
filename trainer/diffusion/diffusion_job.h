// The diffusion training job behind `dcae-trainer` for recipes with job = "diffusion": a class-conditional denoiser
// (registries().denoisers[model.name]) trained on latents (registries().latent_datasets) with a registered objective,
// sampled with a registered sampler at evaluation steps.
//
//   data       latents x_0 = z * sf (diffusion.scaling_factor: the recipe's, else the decoder's published factor,
//              else the shards' stored one); labels replaced by the null class (model.num_classes) with probability
//              diffusion.label_dropout, for classifier-free guidance
//   step       objective draw (timesteps, noise) from the job's noise stream, loss, backward over
//              train.grad_accum micro-batches, clipping, non-finite skip, AdamW + schedule, EMA (the DC-AE job's
//              optimizer, schedule, EMA, loss scaler and checkpoint pieces)
//   eval       every eval.every steps: eval.samples latents from fixed noise (the same every evaluation) with the
//              EMA weights, classifier-free guidance diffusion.cfg_scale; decoded by the frozen [decoder] DC-AE to
//              samples/step_XXXXXXXX.png, or saved as samples/step_XXXXXXXX.safetensors without one; a metrics row
//              with the samples' mean and std
//   resume     checkpoints as the DC-AE job writes them (model, ema, optim, trainer state with the noise stream and
//              data position); checkpoint.resume = "auto" continues bit for bit
//   ranks      world_size > 1: dist::DataParallel (gradients averaged over ranks), each rank its share of the data
//              and its own noise stream, losses averaged over ranks, rank 0 writes; DCAE_PARAM_DIGEST=1 makes every
//              rank write a digest of its parameters at the end (the tests compare them)
//
// Run folder (log.dir or --out): recipe.toml, metrics.jsonl, samples/, checkpoints/.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trainer/checkpoint.h"
#include "trainer/dcae_job.h"
#include "trainer/diffusion/denoisers.h"
#include "trainer/diffusion/latent_data.h"
#include "trainer/diffusion/objective.h"
#include "trainer/diffusion/sampler.h"

namespace dcae::trainer {

// The process-wide diffusion recipe schema plugins extend (the diffusion counterpart of job_schema()).
RecipeSchema& diffusion_job_schema();

namespace diffusion {

// Each label replaced by `null_label` with probability `rate` (one uniform draw per label from `gen`).
Tensor drop_labels(const Tensor& labels, double rate, int64_t null_label, Generator& gen);

// The scaling factor a recipe trains with (see the file comment); `stored` is the data's (0 when unknown).
double resolve_scaling_factor(const Recipe& recipe, double stored);

struct SampleResult {
  int64_t step = 0;
  Tensor latents;           // f32 [n, h, w, C] on the CPU, in the diffusion space (z * sf)
  std::string path;         // the PNG grid or the safetensors file written ("" on other ranks)
  double mean = 0.0, std = 0.0;
};

class DiffusionJob {
 public:
  DiffusionJob(Recipe recipe, JobOptions options = {});
  ~DiffusionJob();
  DiffusionJob(const DiffusionJob&) = delete;
  DiffusionJob& operator=(const DiffusionJob&) = delete;

  JobSummary run();
  StepResult train_step();
  // Samples eval.samples latents (EMA weights when on), decodes or saves them, writes a metrics row.
  SampleResult evaluate();
  std::string save();

  int64_t step() const { return step_; }
  const Recipe& recipe() const { return recipe_; }
  nn::diffusion::Denoiser& model() { return *model_; }
  const Objective& objective() const { return *objective_; }
  const Sampler& sampler() const { return *sampler_; }
  Optimizer& optimizer() { return *optim_; }
  double scaling_factor() const { return scaling_factor_; }
  const std::string& run_dir() const { return run_dir_; }
  const std::string& checkpoint_dir() const { return checkpoint_dir_; }
  const std::optional<std::string>& resumed_from() const { return resumed_from_; }
  Device device() const { return device_; }

 private:
  void build_decoder();
  void setup_data_parallel();
  void resume();
  CheckpointItems checkpoint_items();
  TrainerState trainer_state() const;
  // The network on this job's device and dtype as the objective and samplers call it (f32 in and out).
  LabelledNet network();
  void average_losses_over_ranks(LossTerms& losses);
  void log_step(const StepResult& result);
  // DCAE_PARAM_DIGEST=1: each rank writes a digest of the denoiser's parameters to <run_dir>/param_digest.rank<r>.
  void write_parameter_digest() const;
  bool logging_rank() const;

  Recipe recipe_;
  JobOptions options_;
  Device device_ = Device::cpu();
  DType dtype_ = DType::f32;
  std::string run_dir_, checkpoint_dir_;
  std::shared_ptr<nn::diffusion::Denoiser> model_;
  std::unique_ptr<Objective> objective_;
  std::unique_ptr<Sampler> sampler_;
  std::unique_ptr<LatentSource> source_;
  TrainModel decoder_;  // module null without [decoder]
  double scaling_factor_ = 1.0, label_dropout_ = 0.1, cfg_scale_ = 1.0;
  Generator noise_gen_;  // timesteps, noise and label dropout of training
  std::shared_ptr<dist::Communicator> comm_;
  std::unique_ptr<dist::DataParallel> ddp_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<Schedule> schedule_;
  std::unique_ptr<Ema> ema_;
  std::unique_ptr<NonFiniteTracker> nonfinite_;
  std::unique_ptr<DynamicLossScaler> scaler_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<ProgressMeter> progress_;
  std::optional<std::string> resumed_from_;
  int64_t step_ = 0, total_steps_ = 0, grad_accum_ = 1, batch_size_ = 1;
  double clip_ = 0.0;
  LossTerms window_sums_;
  int64_t window_steps_ = 0;
  double first_window_loss_ = -1.0, last_window_loss_ = 0.0;
  int64_t last_checkpoint_step_ = -1, last_eval_step_ = -1;
};

}  // namespace diffusion
}  // namespace dcae::trainer
