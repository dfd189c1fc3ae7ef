// Optimizer: param groups (each with its own lr and weight decay), fp32 master weights for bf16/f16 parameters,
// per-parameter state created on first use, and state save/load for checkpoints. Subclasses (AdamW, SGD, plugins)
// supply the per-parameter update.
//
//   auto groups = build_param_groups(model.named_parameters(), config);   // trainable ones only
//   auto optim = registries().optimizers.create(config.name, std::move(groups), config);
//   loop: forward, backward; clip_grad_norm(...); optim->set_lr_factor(schedule->factor(step)); optim->step();
//         optim->zero_grad();
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/module.h"
#include "trainer/optim/master_weights.h"

namespace dcae::trainer {

class Recipe;

// An optimizer section of a recipe ([optim] or [disc_optim]).
struct OptimizerConfig {
  std::string name = "adamw";
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.9;  // SGD
  bool nesterov = false;  // SGD
  std::vector<std::string> no_decay = {"*.bias", "*norm*.weight"};
  struct Group {
    std::vector<std::string> params;  // name globs
    std::optional<double> lr;
    std::optional<double> weight_decay;
  };
  std::vector<Group> groups;  // a parameter joins the first group that matches it, else the default group
  // The recipe section this came from (null when built by hand): plugin optimizers read their own keys there.
  const Recipe* recipe = nullptr;
  std::string section;
};
OptimizerConfig optimizer_config(const Recipe& recipe, const std::string& section = "optim");

struct ParamGroup {
  std::string name;  // "default", "default.no_decay", "groups[0]", ... (checkpoints check membership by it)
  std::vector<nn::NamedTensor> params;
  double base_lr = 0.0;  // peak learning rate; the schedule scales it
  double lr = 0.0;       // the learning rate of the next step
  double weight_decay = 0.0;
};

// Trainable parameters (requires_grad) into groups: by config.groups first, then split by the no_decay globs into
// a decayed and an undecayed group. Frozen parameters get no group (hence no state). Empty groups are dropped.
// Errors: no trainable parameter, or a group glob that matches no trainable parameter.
std::vector<ParamGroup> build_param_groups(const std::vector<nn::NamedTensor>& params, const OptimizerConfig& config);

// Per-parameter state: the number of updates it received and named slots (exp_avg, momentum_buffer, ...), in the
// master's dtype.
struct ParamState {
  int64_t step = 0;
  std::map<std::string, Tensor> slots;
};

// Build an optimizer once the model's weights, dtype and device are final: bf16/f16 masters are copied at
// construction (after replacing weights from outside, call masters().refresh_from_params()).
class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual std::string type() const = 0;  // "adamw"; checked when state is loaded

  // One update from each parameter's .grad(); parameters without a gradient are skipped (as in PyTorch). bf16/f16
  // parameters are updated through their fp32 master and written back rounded.
  void step();
  // Drops every parameter's gradient.
  void zero_grad();
  // lr = base_lr * factor in every group (the schedule's value for the coming step).
  void set_lr_factor(double factor);
  // For an optimizer whose step() is captured in a CUDA graph (AdamW::make_capturable): copies the values the
  // host decides per step (each group's lr) to the device buffer the captured kernels read. Call before every
  // replay; an eager step() does it itself. The default has nothing to stage.
  virtual void stage_step_scalars() {}

  std::vector<ParamGroup>& groups() { return groups_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  std::vector<Tensor> params() const;  // every parameter, group by group
  const MasterWeights& masters() const { return masters_; }
  // Parameters with their master tensors (fp32 for bf16/f16 parameters): what an EMA should average.
  std::vector<nn::NamedTensor> named_masters() const;
  const ParamState& state(const std::string& param_name) const;  // throws for an unknown name

  // Checkpoint state: tensors named "<slot>.<param name>" (masters as "master.<param name>") and a JSON object with
  // the type, the groups (names, lrs, weight decays, member names) and per-parameter steps.
  std::vector<nn::NamedTensor> state_tensors() const;
  nlohmann::json state_json() const;
  // Validates type, group membership, names, shapes and dtypes; errors name the mismatch. Learning rates and
  // weight decays are not restored: they come from the (possibly changed) recipe.
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& scalars);

 protected:
  // Updates `master` (f32/f64, contiguous) in place from `grad` (any float dtype) for parameter `name`.
  virtual void update(const ParamGroup& group, const std::string& name, const Tensor& master, const Tensor& grad,
                      ParamState& state) = 0;

  // One parameter's share of a step: what update() receives, plus the bf16/f16 parameter the master is written back
  // to (undefined when the parameter is its own master).
  struct PendingUpdate {
    const ParamGroup* group;
    const std::string* name;
    Tensor master, grad, param;
    ParamState* state;
  };
  // Applies every update of a step. The default runs update() per parameter and writes each master back; an
  // optimizer with a fused multi-tensor kernel (AdamW on GPU) overrides it and writes the parameters itself.
  virtual void update_all(const std::vector<PendingUpdate>& updates);
  // Per-parameter state by name, for optimizers that keep part of it elsewhere (AdamW's device step counts).
  std::map<std::string, ParamState>& param_states() { return states_; }

 private:
  struct Index {
    size_t group;
    size_t slot;    // position within the group
    size_t master;  // position in masters_
  };
  std::vector<ParamGroup> groups_;
  MasterWeights masters_;
  std::map<std::string, Index> index_;
  std::map<std::string, ParamState> states_;
};

}  // namespace dcae::trainer
