// Module: a tree of named parameters, buffers and children with train/eval modes, placement and freezing.
// Hierarchical names join with '.', so names match the diffusers checkpoints directly
// ("decoder.up_blocks.0.1.conv1.weight").
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::nn {

using NamedTensor = std::pair<std::string, Tensor>;

// '*' matches any run of characters (dots included), '?' one character; everything else is literal.
bool glob_match(const std::string& pattern, const std::string& name);

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter and buffer under this module, depth-first in registration order, with full names.
  std::vector<NamedTensor> named_parameters() const;
  std::vector<NamedTensor> named_buffers() const;
  // Parameters and buffers in PyTorch state_dict order (per module: own parameters, own buffers, then children).
  std::vector<NamedTensor> state() const;
  std::vector<std::pair<std::string, Module*>> named_modules();  // "" is this module
  std::vector<Tensor> parameters() const;
  std::vector<Tensor> trainable_parameters() const;
  int64_t num_parameters(bool trainable_only = false) const;
  Tensor parameter(const std::string& full_name) const;  // throws naming the missing name
  Module* child(const std::string& name) const;          // nullptr when absent

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves or casts every parameter and buffer in place: handles held by layers see the change. Buffers that hold
  // counters (integer dtypes) keep their dtype on a float cast.
  void to(Device device);
  void to(DType dtype);

  // requires_grad on parameters whose full name matches any glob; returns how many changed.
  int64_t set_trainable(const std::vector<std::string>& globs, bool trainable);
  // Exactly the parameters matching `globs` are trainable; errors when a glob matches nothing (a typo in a recipe
  // must not silently freeze everything).
  void train_only(const std::vector<std::string>& globs);

 protected:
  // Registration, called by layer constructors; the returned handle aliases the registered tensor.
  Tensor register_parameter(const std::string& name, Tensor value, bool trainable = true);
  Tensor register_buffer(const std::string& name, Tensor value);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void collect(const std::string& prefix, bool parameters, std::vector<NamedTensor>& out) const;
  void collect_state(const std::string& prefix, std::vector<NamedTensor>& out) const;

  std::vector<NamedTensor> parameters_;
  std::vector<NamedTensor> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// Replaces t's data with `value` in place (same TensorImpl, so every handle sees it); shapes must match. Used for
// placement and for loading checkpoints.
void assign_in_place(const Tensor& t, const Tensor& value);

}  // namespace dcae::nn
