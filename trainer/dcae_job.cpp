// DcaeJob: building the pieces from the recipe, resuming, checkpoints and the outer loop. The training step and
// evaluation are in dcae_job_step.cpp.
#include "trainer/dcae_job.h"

#include <glog/logging.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "dist/bootstrap.h"
#include "dist/data_parallel.h"
#include "dist/fsdp.h"
#include "trainer/cpu_float_mode.h"
#include "trainer/diffusion/diffusion_job.h"
#include "trainer/gan_loss.h"
#include "trainer/plugin.h"
#include "trainer/preemption.h"
#include "trainer/registries.h"
#include "trainer/job_common.h"

namespace dcae::trainer {

namespace fs = std::filesystem;

RecipeSchema& job_schema() {
  static RecipeSchema* schema = new RecipeSchema(dcae_recipe_schema());  // never destroyed, like registries()
  return *schema;
}

Recipe load_job_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  const RecipeSource source = resolve_recipe(path, overrides);
  // The job kind picks the schema (and the schema plugins extend).
  RecipeSchema& schema = recipe_job_kind(source.values) == "diffusion" ? diffusion_job_schema() : job_schema();
  load_plugins(plugin_paths(source), registries(), schema);
  return validate_recipe(source, schema);
}

Device resolve_device(const std::string& text) {
  if (text == "auto") return cuda_available() ? Device::cuda() : Device::cpu();
  const Device device = Device::parse(text);
  DCAE_CHECK(!device.is_cuda() || cuda_available(), "train.device = '", text,
             "', but this build has no CUDA backend or no GPU is visible (use cpu or auto)");
  return device;
}

namespace {

DType dtype_of_precision(const std::string& precision) {
  if (precision == "bf16") return DType::bf16;
  if (precision == "fp16") return DType::f16;
  return DType::f32;
}

// The built-in terms and the recipe keys that weight them.
const std::vector<std::pair<std::string, std::string>>& builtin_term_keys() {
  static const std::vector<std::pair<std::string, std::string>> keys = {
      {"l1", "loss.l1"}, {"mse", "loss.mse"}, {"lpips", "loss.lpips"}, {"gan", "loss.gan"}};
  return keys;
}

}  // namespace

DcaeJob::DcaeJob(Recipe recipe, JobOptions options) : recipe_(std::move(recipe)), options_(std::move(options)) {
  const Recipe& r = recipe_;
  flush_denormals_on_all_threads();
  device_ = resolve_device(r.get<std::string>("train.device"));
  // One GPU per process: "cuda" / "auto" name no index, so each rank takes the GPU of its local rank.
  const std::string device_text = r.get<std::string>("train.device");
  if (device_.is_cuda() && (device_text == "cuda" || device_text == "auto")) device_ = Device::cuda(options_.local_rank);
  dtype_ = dtype_of_precision(r.get<std::string>("train.precision"));
  use_fsdp_ = r.get<std::string>("dist.strategy") == "fsdp";
  total_steps_ = r.get<int64_t>("train.steps");
  grad_accum_ = r.get<int64_t>("train.grad_accum");
  batch_size_ = r.get<int64_t>("data.batch_size");
  clip_ = r.get<double>("train.clip_grad_norm");
  const uint64_t seed = static_cast<uint64_t>(r.get<int64_t>("train.seed"));
  run_dir_ = options_.out_dir.empty() ? r.get<std::string>("log.dir") : options_.out_dir;
  checkpoint_dir_ = r.get<std::string>("checkpoint.dir").empty() ? (fs::path(run_dir_) / "checkpoints").string()
                                                                   : r.get<std::string>("checkpoint.dir");

  // Model: random init from its own stream, or weights from model.init_from; then trainable set, dtype, device.
  const std::string init_from = r.get<std::string>("model.init_from");
  Generator init_gen(seed);
  ModelSpec spec;
  spec.name = r.get<std::string>("model.name");
  spec.config = r.at("model.config");
  spec.init.generator = &init_gen;
  spec.init.random_init = init_from.empty();
  spec.recipe = &recipe_;
  model_ = registries().models.create(spec.name, spec);
  if (!init_from.empty()) {
    std::unique_ptr<nn::dcae_model::DcaeConfig> config;
    if (registries().models.contains(spec.name) && spec.name.rfind("dc-ae-", 0) == 0)
      config = std::make_unique<nn::dcae_model::DcaeConfig>(dcae_config_with_overrides(spec.name, spec.config));
    const std::string file = load_initial_weights(*model_.module, init_from, config.get());
    LOG(INFO) << "model weights from " << file;
  }
  model_.module->train_only(r.get<std::vector<std::string>>("train.trainable"));
  // FSDP keeps fp32 parameters: its trainable shards are the masters, gathered in dtype_ for compute.
  if (!use_fsdp_) model_.module->to(dtype_);
  model_.module->to(device_);
  model_.module->train();
  LOG(INFO) << "model " << model_.summary << "; trainable " << model_.module->num_parameters(true) << " ("
            << r.get<std::string>("train.precision") << " on " << device_.str() << ")";

  DataSpec data;
  data.recipe = &recipe_;
  data.batch_size = batch_size_;
  data.resolution = r.get<int64_t>("data.resolution");
  data.eval_images = r.get<int64_t>("eval.images");
  data.seed = seed;
  data.rank = options_.rank;
  data.world_size = options_.world_size;
  data.device = device_;
  source_ = registries().datasets.create(resolve_data_source(r), data);
  eval_images_ = source_->eval_images();
  LOG(INFO) << "data: " << source_->summary() << "; " << eval_images_.size(0) << " evaluation images";

  build_losses();
  cuda_graph_ = r.get<bool>("train.cuda_graph");
  if (cuda_graph_) check_cuda_graph_support();
  setup_data_parallel();  // rank 0's weights on every rank before the optimizer and EMA copy them
  // Under fsdp the optimizer and the EMA hold this rank's trainable shards (fp32, their own masters).
  optim_ = make_optimizer(fsdp_ ? fsdp_->trainable_shards() : model_.module->named_parameters(),
                          optimizer_config(r, "optim"));
  schedule_ = make_schedule(schedule_config(r, "schedule", total_steps_));
  if (r.get<double>("train.ema_decay") > 0.0) {
    std::vector<nn::NamedTensor> trainable;
    for (const auto& [name, t] : fsdp_ ? fsdp_->trainable_shards() : model_.module->named_parameters())
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

DcaeJob::~DcaeJob() = default;

void DcaeJob::build_losses() {
  const Recipe& r = recipe_;
  std::vector<std::pair<std::string, double>> wanted;
  for (const auto& [name, key] : builtin_term_keys()) wanted.emplace_back(name, r.get<double>(key));
  for (const auto& [name, value] : r.at("loss.terms").items()) {
    for (const auto& [builtin, key] : builtin_term_keys())
      DCAE_CHECK(name != builtin, "loss.terms.", name, ": weight the built-in '", name, "' with ", key, " instead");
    DCAE_CHECK(value.is_number() && value.get<double>() >= 0.0, "loss.terms.", name, " (", r.origin("loss.terms." + name),
               ") must be a non-negative number, got ", value.dump());
    DCAE_CHECK(registries().losses.contains(name), "loss.terms.", name, ": unknown loss '", name, "'; known: ",
               [] {
                 std::string known;
                 for (const auto& n : registries().losses.names()) known += (known.empty() ? "" : ", ") + n;
                 return known;
               }());
    wanted.emplace_back(name, value.get<double>());
  }
  for (const auto& [name, weight] : wanted) {
    if (weight <= 0.0) continue;
    LossSpec spec;
    spec.name = name;
    spec.weight = weight;
    spec.recipe = &recipe_;
    spec.device = device_;
    spec.dtype = dtype_;
    spec.seed = static_cast<uint64_t>(r.get<int64_t>("train.seed")) + 1000 + terms_.size();
    spec.total_steps = total_steps_;
    terms_.push_back({name, weight, registries().losses.create(name, spec)});
  }
  DCAE_CHECK(!terms_.empty(), "recipe ", r.describe_origin(), ": every loss weight is 0 (loss.l1, loss.mse, loss.lpips, ",
             "loss.gan, loss.terms); nothing to train");
  adaptive_gan_ = r.get<bool>("loss.adaptive_gan_weight");
  adaptive_gan_max_ = r.get<double>("loss.adaptive_gan_max");
  bool any_adversarial = false;
  for (const Term& t : terms_) any_adversarial = any_adversarial || t.term->adversarial();
  if (adaptive_gan_ && any_adversarial) {
    last_layer_ = model_.module->parameter(model_.last_layer);
    DCAE_CHECK(last_layer_.requires_grad(), "loss.adaptive_gan_weight needs the decoder's last layer '",
               model_.last_layer, "' to be trainable (add it to train.trainable)");
  }
}

LossTerm* DcaeJob::loss_term(const std::string& name) {
  for (Term& t : terms_)
    if (t.name == name) return t.term.get();
  return nullptr;
}

CheckpointItems DcaeJob::checkpoint_items() {
  CheckpointItems items;
  items.modules.emplace_back("model", model_.module.get());
  items.ema = ema_.get();
  items.optimizers.emplace_back("optim", optim_.get());
  for (Term& t : terms_) t.term->add_checkpoint_items(items);
  items.text_files["recipe.toml"] = recipe_.to_toml();
  return items;
}

void DcaeJob::resume() {
  const std::optional<std::string> folder =
      resolve_resume(recipe_.get<std::string>("checkpoint.resume"), checkpoint_dir_);
  if (!folder) return;
  if (fsdp_) {
    resume_sharded(*folder);
    return;
  }
  DCAE_CHECK(!fs::exists(fs::path(*folder) / "manifest.json"), "checkpoint '", *folder,
             "' is sharded (written with dist.strategy = \"fsdp\"); resume it with fsdp on any number of ranks, ",
             "or consolidate it with dcae-export --checkpoint");
  restore_trainer_state(load_checkpoint(*folder, checkpoint_items()), *folder);
}

void DcaeJob::restore_trainer_state(const TrainerState& state, const std::string& folder) {
  step_ = state.step;
  source_->restore(state.data_position);
  if (state.rng.count("default")) restore_rng(default_generator(), state.rng.at("default"));
  if (state.extra.contains("nonfinite"))
    nonfinite_->restore(state.extra["nonfinite"].at("in_a_row").get<int64_t>(),
                        state.extra["nonfinite"].at("total").get<int64_t>());
  if (scaler_ && state.extra.contains("loss_scaler")) scaler_->load(state.extra["loss_scaler"]);
  if (!state.schedule.is_null() && state.schedule != schedule_->to_json())
    LOG(WARNING) << "resuming with a different schedule than the checkpoint's: " << state.schedule.dump() << " -> "
                 << schedule_->to_json().dump();
  resumed_from_ = folder;
  last_checkpoint_step_ = step_;
  last_eval_step_ = step_;  // a finished run invoked again adds no duplicate final evaluation
  LOG(INFO) << "resumed from " << folder << " at step " << step_;
}

TrainerState DcaeJob::trainer_state() const {
  TrainerState state;
  state.step = step_;
  state.rng["default"] = capture_rng(default_generator());
  state.data_position = source_->position();
  state.schedule = schedule_->to_json();
  state.extra["nonfinite"] = {{"in_a_row", nonfinite_->in_a_row()}, {"total", nonfinite_->total_skipped()}};
  if (scaler_) state.extra["loss_scaler"] = scaler_->state();
  return state;
}

std::string DcaeJob::save() {
  sync_graph_to_host();  // exact optimizer step counts, EMA count and non-finite counters in the checkpoint
  if (fsdp_) return save_sharded();  // collective: every rank writes its rows
  if (options_.rank != 0) return "";
  const std::string folder = save_checkpoint(checkpoint_dir_, checkpoint_items(), trainer_state());
  prune_checkpoints(checkpoint_dir_, recipe_.get<int64_t>("checkpoint.keep_last"));
  last_checkpoint_step_ = step_;
  return folder;
}

JobSummary DcaeJob::run() {
  const auto start = std::chrono::steady_clock::now();
  JobSummary summary;
  summary.start_step = step_;
  const int64_t eval_every = recipe_.get<int64_t>("eval.every");
  const int64_t checkpoint_every = recipe_.get<int64_t>("checkpoint.every");
  install_stop_signal_handler();
  dist::Communicator* world = options_.world_size > 1 ? dist::world().get() : nullptr;  // stop-signal agreement
  // A baseline evaluation before the first step shows where training starts.
  if (step_ == 0 && eval_every > 0) summary.evals.push_back(evaluate());
  while (step_ < total_steps_) {
    if (options_.stop_at >= 0 && step_ >= options_.stop_at) {
      summary.interrupted = true;
      break;
    }
    train_step();
    if (eval_every > 0 && step_ % eval_every == 0) summary.evals.push_back(evaluate());
    if (checkpoint_every > 0 && step_ % checkpoint_every == 0) save();
    if (stop_signal_on_any_rank(world)) {  // preempted (slurm/dcae_train.sbatch): checkpoint, stop, be requeued
      if (last_checkpoint_step_ != step_) save();
      LOG(INFO) << "stop signal (SIGUSR1): checkpoint of step " << step_ << " written; stopping for a requeue";
      summary.interrupted = summary.preempted = true;
      break;
    }
  }
  if (!summary.interrupted) {
    if (eval_every > 0 && last_eval_step_ != step_) summary.evals.push_back(evaluate());
    if (last_checkpoint_step_ != step_) save();
  }
  sync_graph_to_host();  // also after an interruption: state() and the non-finite counters are exact again
  write_parameter_digest();
  summary.steps_done = step_;
  summary.first_loss = first_window_loss_;
  summary.last_loss = last_window_loss_;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

bool DcaeJob::logging_rank() const { return is_logging_rank(options_.rank, recipe_.get<bool>("log.all_ranks")); }

}  // namespace dcae::trainer
