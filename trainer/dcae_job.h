// The DC-AE training job behind dcae-trainer: everything a validated recipe describes, built once, then trained.
//
//   model      registries().models[model.name] with model.config overrides; model.init_from loads weights;
//              train.trainable globs -> Module::train_only (frozen parameters: no gradient, no optimizer state and,
//              through autograd pruning, no saved activations below the first trainable layer)
//   precision  fp32, or bf16/fp16 *weights* (the model is cast once; every op then computes in that dtype) with
//              fp32 master weights in the optimizer (under fsdp the model stays fp32 and its units are gathered
//              in the precision's dtype); fp16 adds dynamic loss scaling. Pixel losses are taken in f32.
//   losses     loss.l1 / mse / lpips / gan weights and [loss.terms] name = weight for any registered term
//   data       registries().datasets[data.source]; held-out images for evaluation
//   loop       gradient accumulation, one gradient-sync point, clipping, non-finite skip/stop, AdamW + schedule,
//              EMA, discriminator step; progress line + metrics.jsonl every log.every steps; evaluation (PSNR, SSIM,
//              PNG grid) every eval.every steps and at the end; checkpoints every checkpoint.every steps and at the
//              end, resume = "auto" continuing bit for bit.
//   ranks      JobOptions world_size > 1 (dcae-trainer under mpirun / srun): dist.strategy = "ddp" wraps the model
//              in dist::DataParallel (gradients averaged over ranks at the last micro-step), every rank reads its
//              share of each global batch, logged losses are averaged over ranks, rank 0 writes metrics, grids and
//              checkpoints, every rank loads them on resume; loss terms with networks of their own (the GAN's
//              discriminator) keep them identical over ranks (LossTerm::distribute).
//   fsdp       dist.strategy = "fsdp" (any world size, 1 included; dcae_job_fsdp.cpp): dist::FullyShardedModel
//              over the dist.fsdp.units (DC-AE stages by default), gathered in the precision's dtype; optimizer and
//              EMA on the fp32 trainable shards, clipping with the global shard norm, evaluation through the
//              sharded forward, sharded checkpoints (every rank writes its rows + manifest + COMPLETE) that resume
//              on any number of ranks. The GAN is refused under fsdp.
//   memory     every strategy reports per-rank bytes by category (parameters, gradients, optimizer state,
//              activations, communication buffers) in a line after the progress line and as "memory" in metrics.
//   preemption SIGUSR1 (trainer/preemption.h): every rank stops after the same step with a checkpoint of it.
//   cuda graph train.cuda_graph = true (dcae_job_graph.cpp; one GPU, one rank): the first step of the process runs
//              the step function eagerly (capturable AdamW, device-side clip and skip), the second captures it
//              (forward, losses, backward, norm, AdamW, EMA, zero_grad) and every step replays it after copying
//              its batch into the static input and staging the lr. Loss sums, the last gradient norm and the
//              non-finite counters stay on the GPU until a log step; step counts are read back before checkpoints.
//
// Run folder (log.dir, or --out): recipe.toml, metrics.jsonl, grids/step_XXXXXXXX.png, checkpoints/.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/memory.h"
#include "trainer/checkpoint.h"
#include "trainer/data_sources.h"
#include "trainer/ema.h"
#include "trainer/job_model.h"
#include "trainer/loss_scaler.h"
#include "trainer/losses.h"
#include "trainer/metrics.h"
#include "trainer/optim/clip.h"
#include "trainer/recipe.h"
#include "trainer/schedule.h"

namespace dcae::dist {
class Communicator;
class DataParallel;
class FullyShardedModel;
}  // namespace dcae::dist

namespace dcae::trainer {

struct JobOptions {
  std::string out_dir;   // replaces log.dir when set
  int64_t stop_at = -1;  // stop once this many steps are done, as if interrupted (no final checkpoint or eval)
  int rank = 0, world_size = 1;
  int local_rank = 0;  // this process's index on its node: its GPU when train.device is "cuda" or "auto"
};

// The process-wide recipe schema plugins extend (plugins load once per process, so their keys live here too).
RecipeSchema& job_schema();
// resolve_recipe + the recipe's plugins loaded into registries() / job_schema() + validate_recipe. A recipe with
// job = "diffusion" is validated against diffusion_job_schema() (trainer/diffusion/diffusion_job.h) instead.
Recipe load_job_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
// "auto" -> cuda when available, else cpu; "cuda" without a GPU build is an error.
Device resolve_device(const std::string& text);
// Bytes of tensor memory in use on `device` now (host allocator, or the CUDA caching allocator's blocks).
int64_t device_bytes_in_use(Device device);
// The most bytes in use on `device` since start-up or the last reset_device_peak (each training step starts one).
int64_t device_peak_bytes(Device device);
void reset_device_peak(Device device);

struct EvalResult {
  int64_t step = 0;
  int64_t images = 0;
  double psnr = 0.0, ssim = 0.0;
  std::optional<double> lpips;  // when the recipe trains with LPIPS (VGG16 distance on the float images)
  std::string grid_path;  // empty when eval.grid is off
};

struct StepResult {
  bool skipped = false;  // non-finite loss or gradient (or an fp16 overflow): no update
  LossTerms losses;      // "loss" (weighted total), each term unweighted, gan_weight, d_loss, ...
  double grad_norm = 0.0;
};

struct JobSummary {
  int64_t start_step = 0, steps_done = 0;
  bool interrupted = false;  // stopped by JobOptions::stop_at or by the stop signal
  bool preempted = false;    // stopped by SIGUSR1 (trainer/preemption.h) after writing a checkpoint
  double first_loss = 0.0, last_loss = 0.0;  // mean total loss of the first and last logged windows
  std::vector<EvalResult> evals;
  double seconds = 0.0;
};

class DcaeJob {
 public:
  DcaeJob(Recipe recipe, JobOptions options = {});
  ~DcaeJob();
  DcaeJob(const DcaeJob&) = delete;
  DcaeJob& operator=(const DcaeJob&) = delete;

  // Trains from the current step to train.steps (or options.stop_at).
  JobSummary run();
  // One optimizer step (train.grad_accum micro-batches); advances step().
  StepResult train_step();
  // PSNR/SSIM (and LPIPS when trained with) on the held-out images (EMA weights when train.ema_decay > 0 and eval.use_ema), grid PNG, metrics row.
  EvalResult evaluate();
  // Writes the checkpoint of the current step (rank 0) and prunes old ones.
  std::string save();

  int64_t step() const { return step_; }
  const Recipe& recipe() const { return recipe_; }
  nn::Module& model() { return *model_.module; }
  const TrainModel& train_model() const { return model_; }
  Optimizer& optimizer() { return *optim_; }
  // The sharded model under dist.strategy = "fsdp" (null otherwise).
  dist::FullyShardedModel* fsdp() { return fsdp_.get(); }
  // Per-rank bytes by category now; activations are those the last step's first forward kept for its backward.
  // The metrics' "memory" is this at the end of each step, before its gradients are dropped.
  dist::MemoryStats memory_by_category() const;
  LossTerm* loss_term(const std::string& name);  // nullptr when the recipe does not use it
  const std::string& run_dir() const { return run_dir_; }
  const std::string& checkpoint_dir() const { return checkpoint_dir_; }
  Device device() const { return device_; }
  DType compute_dtype() const { return dtype_; }
  // The resumed checkpoint folder, if the job continued one.
  const std::optional<std::string>& resumed_from() const { return resumed_from_; }

 private:
  struct Term {
    std::string name;
    double weight;
    std::unique_ptr<LossTerm> term;
  };
  void build_losses();
  void resume();
  // Step, data position, RNG and counters from a checkpoint's trainer state (both checkpoint kinds).
  void restore_trainer_state(const TrainerState& state, const std::string& folder);
  TrainerState trainer_state() const;
  CheckpointItems checkpoint_items();
  // Data parallelism over options_.world_size ranks (dcae_job_dist.cpp): the communicator and the DDP wrapper,
  // made after freezing and before the optimizer copies its fp32 masters; nothing on one rank. Under fsdp it
  // shards the model instead (setup_fsdp), on one rank too.
  void setup_data_parallel();
  // The world communicator for this job's device (MPI, or NCCL for CUDA), after checking the launcher agrees.
  std::shared_ptr<dist::Communicator> make_world_communicator();
  // dcae_job_fsdp.cpp: sharding, clipping over shards, sharded checkpoints, memory accounting.
  void setup_fsdp();
  GradNorm clip_sharded_gradients();
  std::string save_sharded();
  void resume_sharded(const std::string& folder);
  int64_t optimizer_state_bytes() const;
  // The model's forward under FSDP (gathers per unit, frees what no backward needs), or `run` itself.
  Tensor run_model(const std::function<Tensor()>& run);
  // Data-parallel training all-reduces the gradients here, once per optimizer step (a no-op on one rank).
  void sync_gradients();
  // The step's logged losses, averaged over ranks in place (a no-op on one rank).
  void average_losses_over_ranks(LossTerms& losses);
  // Rank 0's buffers (BatchNorm statistics) to every rank after a step, so the replicas stay identical.
  void broadcast_buffers();
  // DCAE_PARAM_DIGEST=1: each rank writes a digest of its parameters and buffers to <run_dir>/param_digest.rank<r>.
  void write_parameter_digest();
  // Backward of one micro-batch's losses scaled by `scale`; returns the adaptive GAN weight used (or 0).
  double backward_micro_batch(const Tensor& reconstruction_loss, const Tensor& adversarial_loss, double scale);
  void log_step(const StepResult& result, int64_t images);
  // The train row and memory line of a log step, from the window's mean losses.
  void write_train_row(ProgressMeter::Report& report, double loss, double grad_norm, bool skipped);
  // train.cuda_graph (dcae_job_graph.cpp): what the job refuses up front, the graphed step, its log step, and the
  // device state read back to the host (optimizer step counts, EMA count, non-finite counters) before a checkpoint.
  void check_cuda_graph_support();
  StepResult graphed_train_step();
  void setup_graph();
  void run_graph_step_function();
  void log_graphed_step(StepResult& result, int64_t images);
  void account_graph_nonfinite();
  void sync_graph_to_host();
  bool logging_rank() const;

  Recipe recipe_;
  JobOptions options_;
  Device device_ = Device::cpu();
  DType dtype_ = DType::f32;
  std::string run_dir_, checkpoint_dir_;
  TrainModel model_;
  std::shared_ptr<dist::Communicator> comm_;  // set when world_size > 1
  std::unique_ptr<dist::DataParallel> ddp_;
  bool use_fsdp_ = false;  // dist.strategy = "fsdp"
  std::unique_ptr<dist::FullyShardedModel> fsdp_;
  int64_t activation_bytes_ = 0;  // measured at the last step's first forward
  dist::MemoryStats step_memory_;  // at the end of the last step, before its gradients were dropped
  std::unique_ptr<ImageSource> source_;
  Tensor eval_images_;
  std::vector<Term> terms_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<Schedule> schedule_;
  std::unique_ptr<Ema> ema_;
  std::unique_ptr<NonFiniteTracker> nonfinite_;
  std::unique_ptr<DynamicLossScaler> scaler_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<ProgressMeter> progress_;
  Tensor last_layer_;  // the decoder output weight (adaptive GAN weight), when used
  std::optional<std::string> resumed_from_;
  int64_t step_ = 0, total_steps_ = 0, grad_accum_ = 1, batch_size_ = 1;
  double clip_ = 0.0;
  bool adaptive_gan_ = false;
  double adaptive_gan_max_ = 1e4;
  // Loss sums over the current logging window (each term averaged over the steps it was present in).
  LossTerms window_sums_;
  std::map<std::string, int64_t> window_counts_;
  double first_window_loss_ = -1.0, last_window_loss_ = 0.0;
  // train.cuda_graph: the static inputs, the device statistics and the captured step (dcae_job_graph.cpp).
  struct GraphState;
  struct GraphStateDeleter {
    void operator()(GraphState* state) const;
  };
  bool cuda_graph_ = false;
  std::unique_ptr<GraphState, GraphStateDeleter> graph_;
  int64_t last_checkpoint_step_ = -1, last_eval_step_ = -1;
};

}  // namespace dcae::trainer
