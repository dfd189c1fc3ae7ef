// DiffusionJob: building the pieces from the recipe, ranks, resuming, checkpoints and the outer loop. The training
// step and sampling are in diffusion_job_step.cpp.
#include "trainer/diffusion/diffusion_job.h"

#include <glog/logging.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "dist/bootstrap.h"
#include "dist/data_parallel.h"
#include "nn/diffusion/checkpoint.h"
#include "trainer/cpu_float_mode.h"
#include "trainer/preemption.h"
#include "trainer/registries.h"
#include "trainer/job_common.h"
#ifdef DCAE_WITH_NCCL
#include "dist/cuda/nccl_communicator.h"
#endif

namespace dcae::trainer {

RecipeSchema& diffusion_job_schema() {
  static RecipeSchema* schema = new RecipeSchema(diffusion_recipe_schema());  // never destroyed, like registries()
  return *schema;
}

namespace diffusion {

namespace fs = std::filesystem;

namespace {

DType dtype_of_precision(const std::string& precision) {
  if (precision == "bf16") return DType::bf16;
  if (precision == "fp16") return DType::f16;
  return DType::f32;
}

std::string default_sampler(const std::string& objective) {
  if (objective == "uvit-ddpm") return "dpm-solver++";
  if (objective == "flow-matching") return "heun";
  return "ddpm";
}

int64_t default_sample_steps(const std::string& sampler) {
  if (sampler == "ddpm") return 250;
  if (sampler == "dpm-solver++" || sampler == "dpm-solver++-2m") return 30;
  return 50;
}

}  // namespace

Tensor drop_labels(const Tensor& labels, double rate, int64_t null_label, Generator& gen) {
  DCAE_CHECK(labels.dim() == 1 && labels.dtype() == DType::i64, "drop_labels: labels must be i64 [N], got ", labels.str());
  std::vector<int64_t> out = labels.to(Device::cpu()).to_vector<int64_t>();
  const std::vector<float> draws = rand({labels.size(0)}, gen, DType::f32).to_vector<float>();
  for (size_t i = 0; i < out.size(); ++i)
    if (draws[i] < rate) out[i] = null_label;
  return from_vector(out, labels.shape()).to(labels.device());
}

double resolve_scaling_factor(const Recipe& recipe, double stored) {
  const double configured = recipe.get<double>("diffusion.scaling_factor");
  if (configured > 0.0) return configured;
  const std::string decoder = recipe.get<std::string>("decoder.name");
  if (!decoder.empty()) return dcae_config_with_overrides(decoder, recipe.at("decoder.config")).scaling_factor;
  return stored > 0.0 ? stored : 1.0;
}

DiffusionJob::DiffusionJob(Recipe recipe, JobOptions options) : recipe_(std::move(recipe)), options_(std::move(options)) {
  const Recipe& r = recipe_;
  flush_denormals_on_all_threads();
  device_ = resolve_device(r.get<std::string>("train.device"));
  const std::string device_text = r.get<std::string>("train.device");
  if (device_.is_cuda() && (device_text == "cuda" || device_text == "auto")) device_ = Device::cuda(options_.local_rank);
  dtype_ = dtype_of_precision(r.get<std::string>("train.precision"));
  total_steps_ = r.get<int64_t>("train.steps");
  grad_accum_ = r.get<int64_t>("train.grad_accum");
  batch_size_ = r.get<int64_t>("data.batch_size");
  clip_ = r.get<double>("train.clip_grad_norm");
  label_dropout_ = r.get<double>("diffusion.label_dropout");
  cfg_scale_ = r.get<double>("diffusion.cfg_scale");
  const uint64_t seed = static_cast<uint64_t>(r.get<int64_t>("train.seed"));
  // Each rank its own noise (ranks must not draw the same timesteps and noise for different latents).
  noise_gen_ = Generator(seed * 7919 + 17 + static_cast<uint64_t>(options_.rank));
  run_dir_ = options_.out_dir.empty() ? r.get<std::string>("log.dir") : options_.out_dir;
  checkpoint_dir_ = r.get<std::string>("checkpoint.dir").empty() ? (fs::path(run_dir_) / "checkpoints").string()
                                                                   : r.get<std::string>("checkpoint.dir");

  // Data first: the latents' shape is the denoiser's.
  const std::string source_name = r.get<std::string>("data.source") == "auto"
                                      ? (r.get<bool>("data.synthetic") ? "synthetic" : "latent_shards")
                                      : r.get<std::string>("data.source");
  const int64_t num_classes = r.get<int64_t>("model.num_classes");
  LatentDataSpec data;
  data.recipe = &recipe_;
  data.batch_size = batch_size_;
  data.seed = seed;
  data.rank = options_.rank;
  data.world_size = options_.world_size;
  data.num_classes = num_classes;
  const double stored = source_name == "latent_shards" ? stored_scaling_factor(r.get<std::string>("data.latent_shards")) : 0.0;
  scaling_factor_ = resolve_scaling_factor(r, stored);
  data.scaling_factor = scaling_factor_;
  source_ = registries().latent_datasets.create(source_name, data);
  const Shape latent = source_->latent_shape();
  DCAE_CHECK(latent[0] == latent[1], "diffusion: latents ", latent[0], "x", latent[1], " are not square");
  LOG(INFO) << "data: " << source_->summary() << "; scaling factor " << scaling_factor_;

  DenoiserSpec spec;
  spec.name = r.get<std::string>("model.name");
  spec.shape = {latent[2], latent[0], num_classes};
  spec.config = r.at("model.config");
  Generator init_gen(seed);
  spec.init.generator = &init_gen;
  spec.init.random_init = r.get<std::string>("model.init_from").empty();
  spec.recipe = &recipe_;
  model_ = registries().denoisers.create(spec.name, spec);
  DCAE_CHECK(model_->in_channels() == latent[2] && model_->num_classes() == num_classes, "denoiser '", spec.name,
             "' was built for ", model_->in_channels(), " channels and ", model_->num_classes(),
             " classes; the data has ", latent[2], " channels and model.num_classes is ", num_classes);
  if (!spec.init.random_init) {
    const std::string init_from = r.get<std::string>("model.init_from");
    // efficientvit's files (bare, uvit./dit. or diffusion_model. prefixes) by name; our checkpoints otherwise.
    if (fs::path(init_from).extension() == ".safetensors") nn::diffusion::load_diffusion_weights(*model_, init_from);
    else load_initial_weights(*model_, init_from);
    LOG(INFO) << "denoiser weights from " << init_from;
  }
  model_->to(dtype_);
  model_->to(device_);
  model_->train();
  LOG(INFO) << "denoiser " << spec.name << ": " << model_->num_parameters() << " parameters, " << model_->in_channels()
            << " -> " << model_->out_channels() << " channels, " << num_classes << " classes ("
            << r.get<std::string>("train.precision") << " on " << device_.str() << ")";

  ObjectiveSpec objective;
  objective.name = r.get<std::string>("diffusion.objective");
  objective.train_steps = r.get<int64_t>("diffusion.train_steps");
  objective.recipe = &recipe_;
  objective_ = registries().diffusion_objectives.create(objective.name, objective);
  SamplerSpec sampler;
  sampler.name = r.get<std::string>("diffusion.sampler").empty() ? default_sampler(objective.name)
                                                                  : r.get<std::string>("diffusion.sampler");
  sampler.steps = r.get<int64_t>("diffusion.sample_steps") > 0 ? r.get<int64_t>("diffusion.sample_steps")
                                                                : default_sample_steps(sampler.name);
  sampler.objective = objective_.get();
  // Only the Gaussian (DDPM) objectives use a predicted variance; flow matching needs out = in channels.
  DCAE_CHECK(objective_->gaussian_schedule() != nullptr || model_->out_channels() == model_->in_channels(),
             "model '", spec.name, "' predicts ", model_->out_channels(), " channels for ", model_->in_channels(),
             "-channel latents (a learned variance), but diffusion.objective = \"", objective.name,
             "\" predicts a velocity of the latent's channels only (for DiT set model.config = {learn_sigma = false})");
  sampler_ = registries().diffusion_samplers.create(sampler.name, sampler);
  LOG(INFO) << "objective " << objective_->summary() << "; sampler " << sampler_->summary() << ", guidance scale "
            << cfg_scale_;
  build_decoder();

  setup_data_parallel();  // rank 0's weights on every rank before the optimizer and EMA copy them
  optim_ = make_optimizer(model_->named_parameters(), optimizer_config(r, "optim"));
  schedule_ = make_schedule(schedule_config(r, "schedule", total_steps_));
  if (r.get<double>("train.ema_decay") > 0.0) {
    std::vector<nn::NamedTensor> trainable;  // DiT's fixed sin-cos positions are a frozen parameter
    for (const auto& [name, t] : model_->named_parameters())
      if (t.requires_grad()) trainable.emplace_back(name, t);
    ema_ = std::make_unique<Ema>(trainable, r.get<double>("train.ema_decay"), r.get<bool>("train.ema_warmup"));
  }
  nonfinite_ = std::make_unique<NonFiniteTracker>(r.get<int64_t>("train.max_nonfinite_steps"));
  if (dtype_ == DType::f16)
    scaler_ = std::make_unique<DynamicLossScaler>(r.get<double>("train.loss_scale_init"),
                                                  r.get<int64_t>("train.loss_scale_growth_interval"));
  resume();

  metrics_ = open_run_metrics(recipe_, run_dir_, options_.rank, logging_rank(), resumed_from_.has_value(), step_);
  progress_ = make_progress_meter(r, total_steps_, options_.rank, device_);
}

DiffusionJob::~DiffusionJob() = default;

void DiffusionJob::build_decoder() {
  const std::string name = recipe_.get<std::string>("decoder.name");
  if (name.empty()) return;
  const std::string init_from = recipe_.get<std::string>("decoder.init_from");
  Generator init_gen(static_cast<uint64_t>(recipe_.get<int64_t>("train.seed")) + 99);
  ModelSpec spec;
  spec.name = name;
  spec.config = recipe_.at("decoder.config");
  spec.init.generator = &init_gen;
  spec.init.random_init = init_from.empty();
  spec.recipe = &recipe_;
  decoder_ = registries().models.create(name, spec);
  if (!init_from.empty()) {
    const nn::dcae_model::DcaeConfig config = dcae_config_with_overrides(name, spec.config);
    LOG(INFO) << "decoder weights from " << load_initial_weights(*decoder_.module, init_from, &config);
  } else {
    LOG(WARNING) << "decoder " << name << " has random weights (decoder.init_from is empty): sample images are noise";
  }
  decoder_.module->set_trainable({"*"}, false);
  decoder_.module->to(device_);
  decoder_.module->eval();
  LOG(INFO) << "decoder " << decoder_.summary << " (frozen) decodes samples / " << scaling_factor_;
}

void DiffusionJob::setup_data_parallel() {
  if (options_.world_size <= 1) return;
  DCAE_CHECK(dist::initialized(), "JobOptions world_size = ", options_.world_size,
             " but the distributed runtime is not started (dist::init)");
  comm_ = dist::world();
#ifdef DCAE_WITH_NCCL
  if (device_.is_cuda()) comm_ = std::make_shared<dist::NcclCommunicator>(*dist::world(), device_.index);
#endif
  DCAE_CHECK(comm_->supports(device_), "dist: the ", comm_->backend(), " communicator cannot reduce tensors on ",
             device_.str(), " (a CUDA job needs a build with NCCL)");
  ddp_ = std::make_unique<dist::DataParallel>(*model_, comm_);
  LOG(INFO) << "data parallel over " << options_.world_size << " ranks (" << comm_->backend() << "); global batch "
            << batch_size_ * grad_accum_ * options_.world_size;
}

void DiffusionJob::average_losses_over_ranks(LossTerms& losses) {
  average_loss_terms(comm_, device_, losses);
}

CheckpointItems DiffusionJob::checkpoint_items() {
  CheckpointItems items;
  items.modules.emplace_back("model", model_.get());
  items.ema = ema_.get();
  items.optimizers.emplace_back("optim", optim_.get());
  items.text_files["recipe.toml"] = recipe_.to_toml();
  return items;
}

TrainerState DiffusionJob::trainer_state() const {
  TrainerState state;
  state.step = step_;
  state.rng["noise"] = capture_rng(noise_gen_);
  state.data_position = source_->position();
  state.schedule = schedule_->to_json();
  state.extra["nonfinite"] = {{"in_a_row", nonfinite_->in_a_row()}, {"total", nonfinite_->total_skipped()}};
  if (scaler_) state.extra["loss_scaler"] = scaler_->state();
  state.extra["world_size"] = options_.world_size;
  return state;
}

void DiffusionJob::resume() {
  const std::optional<std::string> folder =
      resolve_resume(recipe_.get<std::string>("checkpoint.resume"), checkpoint_dir_);
  if (!folder) return;
  const TrainerState state = load_checkpoint(*folder, checkpoint_items());
  step_ = state.step;
  source_->restore(state.data_position);
  // The noise stream is per rank; the checkpoint holds rank 0's, so other ranks step theirs past it alike.
  if (state.rng.count("noise")) {
    const RngState saved = state.rng.at("noise");
    noise_gen_.set_state(noise_gen_.seed(), saved.offset);
  }
  if (state.extra.contains("nonfinite"))
    nonfinite_->restore(state.extra["nonfinite"].at("in_a_row").get<int64_t>(),
                        state.extra["nonfinite"].at("total").get<int64_t>());
  if (scaler_ && state.extra.contains("loss_scaler")) scaler_->load(state.extra["loss_scaler"]);
  if (!state.schedule.is_null() && state.schedule != schedule_->to_json())
    LOG(WARNING) << "resuming with a different schedule than the checkpoint's: " << state.schedule.dump() << " -> "
                 << schedule_->to_json().dump();
  resumed_from_ = *folder;
  last_checkpoint_step_ = last_eval_step_ = step_;
  LOG(INFO) << "resumed from " << *folder << " at step " << step_;
}

std::string DiffusionJob::save() {
  if (options_.rank != 0) return "";
  const std::string folder = save_checkpoint(checkpoint_dir_, checkpoint_items(), trainer_state());
  prune_checkpoints(checkpoint_dir_, recipe_.get<int64_t>("checkpoint.keep_last"));
  last_checkpoint_step_ = step_;
  return folder;
}

JobSummary DiffusionJob::run() {
  const auto start = std::chrono::steady_clock::now();
  JobSummary summary;
  summary.start_step = step_;
  const int64_t eval_every = recipe_.get<int64_t>("eval.every");
  const int64_t checkpoint_every = recipe_.get<int64_t>("checkpoint.every");
  install_stop_signal_handler();
  dist::Communicator* world = options_.world_size > 1 ? dist::world().get() : nullptr;
  if (step_ == 0 && eval_every > 0) evaluate();  // where sampling starts
  while (step_ < total_steps_) {
    if (options_.stop_at >= 0 && step_ >= options_.stop_at) {
      summary.interrupted = true;
      break;
    }
    train_step();
    if (eval_every > 0 && step_ % eval_every == 0) evaluate();
    if (checkpoint_every > 0 && step_ % checkpoint_every == 0) save();
    if (stop_signal_on_any_rank(world)) {
      if (last_checkpoint_step_ != step_) save();
      LOG(INFO) << "stop signal (SIGUSR1): checkpoint of step " << step_ << " written; stopping for a requeue";
      summary.interrupted = summary.preempted = true;
      break;
    }
  }
  if (!summary.interrupted) {
    if (eval_every > 0 && last_eval_step_ != step_) evaluate();
    if (last_checkpoint_step_ != step_) save();
  }
  write_parameter_digest();
  summary.steps_done = step_;
  summary.first_loss = first_window_loss_;
  summary.last_loss = last_window_loss_;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

void DiffusionJob::write_parameter_digest() const {
  const char* flag = std::getenv("DCAE_PARAM_DIGEST");
  if (flag == nullptr || std::string(flag) != "1") return;
  // FNV-1a over the bytes of every parameter and buffer: equal digests on every rank mean identical replicas.
  uint64_t hash = 1469598103934665603ull;
  for (const auto& [name, t] : model_->state()) {
    const Tensor host = t.to(Device::cpu()).contiguous();
    const auto* bytes = static_cast<const unsigned char*>(host.raw_data());
    for (size_t i = 0; i < host.nbytes(); ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  LOG(INFO) << "rank " << options_.rank << " parameter digest of the denoiser " << hex << " at step " << step_;
  fs::create_directories(run_dir_);
  std::ofstream(fs::path(run_dir_) / ("param_digest.rank" + std::to_string(options_.rank))) << hex << "\n";
}

bool DiffusionJob::logging_rank() const { return is_logging_rank(options_.rank, recipe_.get<bool>("log.all_ranks")); }

}  // namespace diffusion
}  // namespace dcae::trainer
