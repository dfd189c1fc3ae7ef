#include "nn/module.h"

namespace dcae::nn {

bool glob_match(const std::string& pattern, const std::string& name) {
  // Iterative matcher with backtracking to the last '*'.
  size_t p = 0, n = 0, star = std::string::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

void Module::collect(const std::string& prefix, bool parameters, std::vector<NamedTensor>& out) const {
  for (const auto& [name, t] : parameters ? parameters_ : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", parameters, out);
}

void Module::collect_state(const std::string& prefix, std::vector<NamedTensor>& out) const {
  for (const auto& [name, t] : parameters_) out.emplace_back(prefix + name, t);
  for (const auto& [name, t] : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect_state(prefix + name + ".", out);
}

std::vector<NamedTensor> Module::state() const {
  std::vector<NamedTensor> out;
  collect_state("", out);
  return out;
}

std::vector<NamedTensor> Module::named_parameters() const {
  std::vector<NamedTensor> out;
  collect("", true, out);
  return out;
}

std::vector<NamedTensor> Module::named_buffers() const {
  std::vector<NamedTensor> out;
  collect("", false, out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (const auto& [name, child] : children_)
    for (const auto& [sub, module] : child->named_modules()) out.emplace_back(sub.empty() ? name : name + "." + sub, module);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (const auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<Tensor> Module::trainable_parameters() const {
  std::vector<Tensor> out;
  for (const auto& [name, t] : named_parameters())
    if (t.requires_grad()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

Tensor Module::parameter(const std::string& full_name) const {
  for (const auto& [name, t] : named_parameters())
    if (name == full_name) return t;
  DCAE_FAIL("no parameter named '", full_name, "' in this module");
}

Module* Module::child(const std::string& name) const {
  for (const auto& [child_name, module] : children_)
    if (child_name == name) return module.get();
  return nullptr;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::to(Device device) {
  for (const auto& [name, t] : named_parameters()) assign_in_place(t, t.to(device));
  for (const auto& [name, t] : named_buffers()) assign_in_place(t, t.to(device));
}

void Module::to(DType dtype) {
  for (const auto& [name, t] : named_parameters()) assign_in_place(t, t.to(dtype));
  for (const auto& [name, t] : named_buffers())
    if (is_floating(t.dtype())) assign_in_place(t, t.to(dtype));
}

int64_t Module::set_trainable(const std::vector<std::string>& globs, bool trainable) {
  int64_t changed = 0;
  for (const auto& [name, t] : named_parameters()) {
    for (const std::string& glob : globs) {
      if (!glob_match(glob, name)) continue;
      if (t.requires_grad() != trainable) ++changed;
      Tensor(t).set_requires_grad(trainable);
      break;
    }
  }
  return changed;
}

void Module::train_only(const std::vector<std::string>& globs) {
  const auto params = named_parameters();
  for (const std::string& glob : globs) {
    bool matched = false;
    for (const auto& [name, t] : params) matched = matched || glob_match(glob, name);
    DCAE_CHECK(matched, "trainable pattern '", glob, "' matches no parameter (", params.size(),
               " parameters, e.g. '", params.empty() ? std::string() : params.front().first, "')");
  }
  for (const auto& [name, t] : params) {
    bool keep = false;
    for (const std::string& glob : globs) keep = keep || glob_match(glob, name);
    Tensor(t).set_requires_grad(keep);
  }
}

Tensor Module::register_parameter(const std::string& name, Tensor value, bool trainable) {
  DCAE_CHECK(name.find('.') == std::string::npos && !name.empty(), "parameter name '", name, "' must be non-empty without '.'");
  for (const auto& [existing, t] : parameters_) DCAE_CHECK(existing != name, "parameter '", name, "' registered twice");
  value = value.detach();  // a parameter is a leaf
  value.set_requires_grad(trainable);
  parameters_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  DCAE_CHECK(name.find('.') == std::string::npos && !name.empty(), "buffer name '", name, "' must be non-empty without '.'");
  buffers_.emplace_back(name, value.detach());
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  DCAE_CHECK(module != nullptr, "child module '", name, "' is null");
  for (const auto& [existing, m] : children_) DCAE_CHECK(existing != name, "child module '", name, "' registered twice");
  children_.emplace_back(name, std::move(module));
}

void assign_in_place(const Tensor& t, const Tensor& value) {
  DCAE_CHECK(t.shape() == value.shape(), "cannot assign ", value.str(), " to ", t.str(), ": shapes differ");
  if (t.is_same(value)) return;
  TensorImpl* impl = t.impl();
  Tensor packed = value.contiguous();
  if (packed.storage() == t.storage()) packed = packed.clone();
  impl->storage = packed.storage();
  impl->strides = packed.strides();
  impl->offset = packed.offset();
  impl->dtype = packed.dtype();
  const Tensor& grad = impl->autograd.grad;
  if (grad.defined() && (grad.device() != packed.device() || grad.dtype() != packed.dtype())) impl->autograd.grad = Tensor();
}

}  // namespace dcae::nn
