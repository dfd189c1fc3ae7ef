// Fully sharded data parallelism (ZeRO-3 / FSDP2 style). Every parameter is split along dim 0 over the ranks
// (dist/shard_layout.h); a rank keeps only its shard between uses: an fp32 master (the optimizer's parameter) for
// trainable parameters, the compute dtype only for frozen ones (no master, gradient or optimizer state).
// Parameters are grouped into units, named module globs such as the DC-AE stages; a unit's shards are all-gathered
// in the compute dtype (bf16 or f32) just before its forward, freed after it, gathered again when its backward
// starts, and its gradients are reduce-scattered (averaged over ranks, in reduce_dtype) into fp32 shard gradients
// as soon as backward has produced them. The unit after the current one is prefetched (forward and backward).
// A frozen unit whose input needs no gradient (below the first trainable layer) runs without recording backward.
//
//   dist::FullyShardedModel fsdp(model, dist::world(), {.units = {"blocks.*"}, .compute_dtype = DType::bf16});
//   auto optim = make_optimizer(fsdp.named_shards(), ...);   // frozen shards do not require grad: no group
//   loop: Tensor loss = fsdp.forward([&] { return loss_fn(model.forward(x)); });
//         autograd::backward(loss);       // shard .grad() filled (average over ranks) when backward returns
//         fsdp.grad_norm() for clipping; optim.step(); optim.zero_grad();
//
// How a unit gets the per-unit schedule: every unit whose module is an nn::Layer gets a forward interceptor
// (nn::Layer::set_forward_interceptor), which runs whenever the parent calls it through operator() (nn::Sequential
// and the DC-AE Encoder/Decoder do), so "encoder.down_blocks.*" needs nothing from the model. A parent that calls
// child->forward() directly bypasses the hook: wrap(name, layer) gives it a layer to call instead. Units that no
// hook or wrapper drives (and the root) are gathered by forward() and stay gathered until their backward is done
// (frozen ones that no backward needs are freed right after forward). Until a unit's hook has run once (the first
// forward), forward() gathers it up front too; from then on it is gathered only when it runs. Between steps the
// model's own parameter tensors hold no memory: use gather_full_parameters() / sharded_state() to read them,
// never the model's tensors.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/memory.h"
#include "dist/shard_layout.h"
#include "dist/sharded_checkpoint.h"
#include "nn/layers.h"

namespace dcae::dist {

struct FsdpOptions {
  // Module-name globs (nn::glob_match): the outermost modules a glob matches are units ("decoder.up_blocks.*": one
  // unit per stage). A parameter belongs to the deepest unit that contains it (units of different globs may nest);
  // parameters outside every unit form the root unit. A glob matching no module is an error.
  std::vector<std::string> units;
  std::optional<DType> compute_dtype =
      std::nullopt;                   // gathered parameters' dtype; default: the model's parameter dtype
  DType reduce_dtype = DType::f32;    // dtype gradients are averaged in
  bool reshard_after_forward = true;  // false: wrapped units stay gathered from forward to backward
  bool prefetch = true;               // start the next unit's all-gather while the current one computes
  bool broadcast_parameters = true;   // start from rank 0's parameters
};

class FullyShardedModel {
 public:
  // Shards every parameter of `model` now; the model's parameters become empty placeholders in the compute dtype.
  // Freeze (set_trainable / train_only) before: the trainable set is fixed here.
  FullyShardedModel(nn::Module& model, std::shared_ptr<Communicator> comm, FsdpOptions options);
  ~FullyShardedModel();
  FullyShardedModel(const FullyShardedModel&) = delete;
  FullyShardedModel& operator=(const FullyShardedModel&) = delete;

  // Runs one forward of the model (`run` calls it): gathers the root unit and the units no wrapper drives, and
  // frees everything again when no backward will follow (grad mode off, or a result that needs no grad).
  Tensor forward(const std::function<Tensor()>& run);
  // A layer to call instead of `layer`, which must be the module of unit `unit_name`: gathers, runs, reshards
  // and hooks backward. Only inside forward().
  std::shared_ptr<nn::Layer> wrap(const std::string& unit_name, std::shared_ptr<nn::Layer> layer);
  Tensor run_unit(const std::string& unit_name, const Tensor& x, const std::function<Tensor(const Tensor&)>& fn);

  // One shard per parameter, named like the model's parameters (padded to ShardLayout::shard_shape). Trainable
  // ones require grad and receive the averaged gradient; give them all to the optimizer.
  std::vector<nn::NamedTensor> named_shards() const;
  std::vector<nn::NamedTensor> trainable_shards() const;
  const ShardLayout& layout(const std::string& param_name) const;

  // L2 norm of all trainable shard gradients over all ranks (collective).
  double grad_norm();
  // Full parameters on every rank, in the shard dtype (fp32 for trainable), in model order (collective).
  std::vector<nn::NamedTensor> gather_full_parameters();
  // Parameters as checkpoint entries (this rank's rows); load_sharded_checkpoint writes into the shards.
  std::vector<ShardedTensor> sharded_state() const;
  // A tensor shaped like `param_name`'s shard (an optimizer slot) as a checkpoint entry named `save_name`.
  ShardedTensor sharded_like(const std::string& param_name, const std::string& save_name,
                             const Tensor& shard_like) const;
  // Frees every gathered unit now (after a forward whose backward will not run).
  void reshard_all();

  struct UnitInfo {
    std::string name;  // the module name; "<root>" for parameters outside every unit
    std::vector<std::string> params;
    bool trainable = false;  // holds a trainable parameter
    bool wrapped = false;  // driven per unit: wrap()'s layer or the module's forward hook ran it
    int64_t forward_gathers = 0, backward_gathers = 0, reduce_scatters = 0;
    int64_t forwards_without_backward = 0;  // forwards run with recording off (frozen, input needs no grad)
    bool gathered = false;
  };
  std::vector<UnitInfo> units() const;

  void set_optimizer_state_bytes(int64_t bytes) { optimizer_state_bytes_ = bytes; }
  MemoryStats memory() const;
  Communicator& communicator() { return *comm_; }

 private:
  struct Param;
  struct Unit;
  struct PendingReduce;
  enum class Phase { forward, backward };

  size_t unit_index(const std::string& name) const;
  Tensor run_unit_at(size_t u, const Tensor& x, const std::function<Tensor(const Tensor&)>& fn);
  void start_gather(Unit& unit, Phase phase);
  void finish_gather(Unit& unit);
  void ensure_gathered(Unit& unit, Phase phase);
  void reshard(Unit& unit);
  void prefetch_forward(size_t after);
  void prefetch_backward(size_t before);
  void reduce_scatter(Unit& unit);
  void finish_reduce();
  void on_grad_ready(size_t param);
  void on_input_grad(size_t unit);
  void maybe_reshard_after_backward(Unit& unit);
  void on_backward_end();
  void track_comm(int64_t delta);

  nn::Module& model_;
  std::shared_ptr<Communicator> comm_;
  FsdpOptions options_;
  DType compute_dtype_ = DType::f32;
  std::vector<Param> params_;
  std::vector<Unit> units_;
  std::unique_ptr<PendingReduce> pending_reduce_;
  std::vector<size_t> forward_order_, last_forward_order_;
  bool in_forward_ = false;
  bool step_active_ = false;  // a forward that recorded history waits for its backward
  int end_hook_ = 0;
  int64_t optimizer_state_bytes_ = 0;
  int64_t comm_bytes_ = 0, comm_peak_ = 0;
};

// The layer wrap() returns.
class ShardedLayer final : public nn::Layer {
 public:
  ShardedLayer(FullyShardedModel& fsdp, std::string unit, std::shared_ptr<nn::Layer> inner)
      : fsdp_(fsdp), unit_(std::move(unit)), inner_(std::move(inner)) {}
  Tensor forward(const Tensor& x) override {
    return fsdp_.run_unit(unit_, x, [this](const Tensor& in) { return inner_->forward(in); });
  }

 private:
  FullyShardedModel& fsdp_;
  std::string unit_;
  std::shared_ptr<nn::Layer> inner_;
};

}  // namespace dcae::dist
