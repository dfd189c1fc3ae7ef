// DcaeJob under dist.strategy = "fsdp": sharding the model, clipping over shards, sharded checkpoints that resume
// on any number of ranks, and per-rank memory by category (for every strategy).
//
// Sharded checkpoint tensors: "model.<param>" (this rank's rows of every parameter: fp32 trainable shards, frozen
// ones in the compute dtype), "model.<buffer>" (replicated; rank 0's copy), "optim.<slot>.<param>" (optimizer
// slots, row-sharded like their parameter), "ema.<param>" (EMA shadows). The manifest's metadata holds
// "trainer_state", "optim" and "ema" (their JSON state), "recipe" and "strategy".
#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/tensor/storage.h"
#include "dist/bootstrap.h"
#include "dist/data_parallel.h"
#include "dist/fsdp.h"
#include "dist/sharded_checkpoint.h"
#include "trainer/dcae_job.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/caching_allocator.h"
#endif

namespace dcae::trainer {

namespace fs = std::filesystem;

int64_t device_bytes_in_use(Device device) {
#ifdef DCAE_WITH_CUDA
  if (device.is_cuda()) return static_cast<int64_t>(cuda::caching_allocator(device.index).stats().allocated_bytes);
#endif
  (void)device;
  return static_cast<int64_t>(CpuAllocator::instance().bytes_in_use());
}

int64_t device_peak_bytes(Device device) {
#ifdef DCAE_WITH_CUDA
  if (device.is_cuda()) return static_cast<int64_t>(cuda::caching_allocator(device.index).stats().peak_allocated_bytes);
#endif
  (void)device;
  return static_cast<int64_t>(CpuAllocator::instance().peak_bytes());
}

void reset_device_peak(Device device) {
#ifdef DCAE_WITH_CUDA
  if (device.is_cuda()) return cuda::caching_allocator(device.index).reset_peak_stats();
#endif
  (void)device;
  CpuAllocator::instance().reset_peak();
}

void DcaeJob::setup_fsdp() {
  std::shared_ptr<dist::Communicator> comm = std::make_shared<dist::LocalCommunicator>();
  if (options_.world_size > 1) comm = comm_ = make_world_communicator();
  dist::FsdpOptions options;
  options.units = recipe_.get<std::vector<std::string>>("dist.fsdp.units");
  options.compute_dtype = dtype_;  // from train.precision; the shards of trainable parameters stay fp32
  options.reshard_after_forward = recipe_.get<bool>("dist.fsdp.reshard_after_forward");
  options.prefetch = recipe_.get<bool>("dist.fsdp.prefetch");
  options.reduce_dtype = recipe_.get<std::string>("dist.fsdp.reduce_dtype") == "bf16" ? DType::bf16 : DType::f32;
  try {
    fsdp_ = std::make_unique<dist::FullyShardedModel>(*model_.module, comm, options);
  } catch (const Error& e) {
    DCAE_FAIL("dist.fsdp (", recipe_.origin("dist.fsdp.units"), "): ", e.what());
  }
  int64_t driven = 0;
  for (const auto& unit : fsdp_->units()) driven += unit.name != "<root>";
  LOG(INFO) << "fsdp over " << options_.world_size << " rank(s) (" << comm->backend() << "): " << driven
            << " units, gathered in " << dtype_name(dtype_) << "; global batch "
            << batch_size_ * grad_accum_ * options_.world_size << "; per rank " << fsdp_->memory().str();
}

Tensor DcaeJob::run_model(const std::function<Tensor()>& run) { return fsdp_ ? fsdp_->forward(run) : run(); }

GradNorm DcaeJob::clip_sharded_gradients() {
  // As clip_grad_norm, with the norm over every rank's shards (padding rows hold zero gradients).
  GradNorm out;
  out.norm = fsdp_->grad_norm();
  out.finite = std::isfinite(out.norm);
  if (clip_ > 0.0 && out.finite && out.norm > clip_) {
    scale_grads(optim_->params(), clip_ / (out.norm + 1e-6));
    out.clipped = true;
  }
  return out;
}

int64_t DcaeJob::optimizer_state_bytes() const {
  // Slots only: fp32 masters of bf16/fp16 weights ("master.*") count as parameters.
  int64_t bytes = 0;
  for (const auto& [name, t] : optim_->state_tensors())
    if (name.rfind("master.", 0) != 0) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

dist::MemoryStats DcaeJob::memory_by_category() const {
  dist::MemoryStats stats;
  if (fsdp_) {
    fsdp_->set_optimizer_state_bytes(optimizer_state_bytes());
    stats = fsdp_->memory();
  } else {
    // Replicated parameters, their gradients, separate fp32 masters (bf16/fp16 weights) and DDP's buckets.
    stats = ddp_ ? ddp_->memory() : dist::MemoryStats{};
    if (!ddp_)
      for (const Tensor& p : model_.module->parameters()) {
        stats.parameters += static_cast<int64_t>(p.nbytes());
        if (p.grad().defined()) stats.gradients += static_cast<int64_t>(p.grad().nbytes());
      }
    const MasterWeights& masters = optim_->masters();
    for (size_t i = 0; i < masters.size(); ++i)
      if (masters.has_copy(i)) stats.parameters += static_cast<int64_t>(masters.master(i).nbytes());
    stats.optimizer_state = optimizer_state_bytes();
  }
  stats.activations = activation_bytes_;
  return stats;
}

namespace {

// A tensor shaped and typed like `like` on the CPU, for a load to fill before it is copied to the device.
Tensor host_staging(const Tensor& like) { return zeros(like.shape(), like.dtype(), Device::cpu()); }

}  // namespace

std::string DcaeJob::save_sharded() {
  // The checkpoint's own collectives exchange CPU metadata: MPI (or the local one), never NCCL.
  dist::Communicator& comm = options_.world_size > 1 ? *dist::world() : fsdp_->communicator();
  std::vector<dist::ShardedTensor> tensors;
  for (dist::ShardedTensor t : fsdp_->sharded_state()) {
    t.name = "model." + t.name;
    tensors.push_back(std::move(t));
  }
  for (const auto& [name, buffer] : model_.module->named_buffers())
    tensors.push_back(dist::replicated("model." + name, buffer, comm.rank()));
  const nlohmann::json optim_json = optim_->state_json();
  for (const auto& [param, state] : optim_json.at("param_state").items())
    for (const auto& [slot, value] : optim_->state(param).slots)
      tensors.push_back(fsdp_->sharded_like(param, "optim." + slot + "." + param, value));
  if (ema_)
    for (const auto& [param, shadow] : ema_->shadows())
      tensors.push_back(fsdp_->sharded_like(param, "ema." + param, shadow));
  nlohmann::json metadata = {{"strategy", "fsdp"},
                             {"trainer_state", trainer_state_to_json(trainer_state())},
                             {"optim", optim_json},
                             {"ema", ema_ ? ema_->state_json() : nlohmann::json()},
                             {"recipe", recipe_.to_toml()}};
  const std::string folder = (fs::path(checkpoint_dir_) / checkpoint_folder_name(step_)).string();
  dist::save_sharded_checkpoint(folder, comm, tensors, metadata);
  if (comm.rank() == 0) prune_checkpoints(checkpoint_dir_, recipe_.get<int64_t>("checkpoint.keep_last"));
  last_checkpoint_step_ = step_;
  return folder;
}

void DcaeJob::resume_sharded(const std::string& folder) {
  DCAE_CHECK(dist::is_complete_sharded_checkpoint(folder), "checkpoint '", folder,
             "' is not a sharded checkpoint (no manifest.json): it was written with dist.strategy = \"ddp\"; ",
             "resume it with ddp, or start the fsdp run from its weights with model.init_from");
  const dist::ShardedManifest manifest = dist::read_sharded_manifest(folder);  // malformed: an error naming it
  const nlohmann::json& meta = manifest.metadata;
  DCAE_CHECK(meta.value("strategy", "") == "fsdp" && meta.contains("trainer_state") && meta.contains("optim"),
             "sharded checkpoint '", folder, "' has no fsdp trainer state in its manifest (not written by dcae-trainer?)");
  const int rank = fsdp_->communicator().rank();

  // Everything is read into host staging tensors first, so a mismatch leaves the job untouched.
  std::vector<dist::ShardedTensor> targets;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination on the device, staging)
  auto stage_rows = [&](dist::ShardedTensor t, const std::string& name, const Tensor& destination) {
    Tensor staging = host_staging(destination);
    t.name = name;
    t.data = staging;
    targets.push_back(t);
    copies.emplace_back(destination, staging);
  };
  for (const dist::ShardedTensor& t : fsdp_->sharded_state()) stage_rows(t, "model." + t.name, t.data);
  for (const auto& [name, buffer] : model_.module->named_buffers()) {
    dist::ShardedTensor all = dist::replicated(name, buffer, 0);  // every rank reads every row
    stage_rows(all, "model." + name, all.data);
  }
  // Optimizer slots and EMA shadows: whole padded shards (padding rows stay zero), filled in their valid rows.
  auto stage_shard = [&](const std::string& param, const std::string& name, const Tensor& shard_like) {
    Tensor staging = host_staging(shard_like);
    dist::ShardedTensor t = fsdp_->sharded_like(param, name, staging);
    targets.push_back(t);
    return staging;
  };
  std::map<std::string, Tensor> optim_tensors, ema_tensors;
  std::map<std::string, Tensor> shards;
  for (const auto& [name, shard] : fsdp_->trainable_shards()) shards[name] = shard;
  const nlohmann::json& optim_json = meta.at("optim");
  for (const auto& [param, state] : optim_json.at("param_state").items()) {
    DCAE_CHECK(shards.count(param), "sharded checkpoint '", folder, "': optimizer state for '", param,
               "', which does not train here (did train.trainable change?)");
    for (const auto& slot : state.at("slots"))
      optim_tensors[slot.get<std::string>() + "." + param] =
          stage_shard(param, "optim." + slot.get<std::string>() + "." + param, shards[param].detach());
  }
  if (ema_) {
    DCAE_CHECK(!meta.at("ema").is_null(), "sharded checkpoint '", folder, "' has no EMA, but train.ema_decay is set");
    for (const auto& [param, shadow] : ema_->shadows()) ema_tensors[param] = stage_shard(param, "ema." + param, shadow);
  }
  dist::load_sharded_checkpoint(folder, targets);

  try {
    optim_->load_state(optim_tensors, optim_json);
  } catch (const Error& e) {
    DCAE_FAIL("sharded checkpoint '", folder, "', optim: ", e.what());
  }
  if (ema_) {
    try {
      ema_->load_state(ema_tensors, meta.at("ema"));
    } catch (const Error& e) {
      DCAE_FAIL("sharded checkpoint '", folder, "', ema: ", e.what());
    }
  }
  for (auto& [destination, staging] : copies) Tensor(destination).copy_(staging);
  restore_trainer_state(trainer_state_from_json(meta.at("trainer_state")), folder);
  LOG(INFO) << "sharded checkpoint written by " << manifest.world_size << " rank(s), loaded on "
            << options_.world_size << " (rank " << rank << ")";
}

}  // namespace dcae::trainer
