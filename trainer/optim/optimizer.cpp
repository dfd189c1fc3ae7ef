#include "trainer/optim/optimizer.h"

#include <set>

#include "trainer/recipe.h"

namespace dcae::trainer {

using nlohmann::json;

OptimizerConfig optimizer_config(const Recipe& recipe, const std::string& section) {
  OptimizerConfig c;
  c.recipe = &recipe;
  c.section = section;
  c.name = recipe.get<std::string>(section + ".name");
  c.lr = recipe.get<double>(section + ".lr");
  const auto betas = recipe.get<std::vector<double>>(section + ".betas");
  DCAE_CHECK(betas.size() == 2, section, ".betas needs 2 values, got ", betas.size());
  c.beta1 = betas[0];
  c.beta2 = betas[1];
  c.eps = recipe.get<double>(section + ".eps");
  c.weight_decay = recipe.get<double>(section + ".weight_decay");
  c.momentum = recipe.get<double>(section + ".momentum");
  c.nesterov = recipe.get<bool>(section + ".nesterov");
  c.no_decay = recipe.get<std::vector<std::string>>(section + ".no_decay");
  for (const json& g : recipe.at(section + ".groups")) {
    OptimizerConfig::Group group;
    group.params = g.at("params").get<std::vector<std::string>>();
    if (g.contains("lr")) group.lr = g["lr"].get<double>();
    if (g.contains("weight_decay")) group.weight_decay = g["weight_decay"].get<double>();
    c.groups.push_back(std::move(group));
  }
  return c;
}

namespace {
bool matches_any(const std::vector<std::string>& globs, const std::string& name) {
  for (const std::string& glob : globs)
    if (nn::glob_match(glob, name)) return true;
  return false;
}
}  // namespace

std::vector<ParamGroup> build_param_groups(const std::vector<nn::NamedTensor>& params, const OptimizerConfig& config) {
  // Slots: per config group g (and the default as the last), a decayed and an undecayed group.
  const size_t n_specs = config.groups.size() + 1;
  std::vector<ParamGroup> slots(2 * n_specs);
  std::vector<size_t> matched(config.groups.size(), 0);
  size_t trainable = 0;
  for (const auto& [name, t] : params) {
    if (!t.requires_grad()) continue;
    ++trainable;
    size_t spec = config.groups.size();
    for (size_t g = 0; g < config.groups.size(); ++g) {
      if (matches_any(config.groups[g].params, name)) {
        spec = g;
        ++matched[g];
        break;
      }
    }
    slots[2 * spec + (matches_any(config.no_decay, name) ? 1 : 0)].params.emplace_back(name, t);
  }
  DCAE_CHECK(trainable > 0, "optimizer '", config.name, "': no trainable parameter among ", params.size(),
             " (check train.trainable)");
  for (size_t g = 0; g < config.groups.size(); ++g) {
    std::string globs;
    for (const std::string& glob : config.groups[g].params) globs += (globs.empty() ? "" : ", ") + glob;
    DCAE_CHECK(matched[g] > 0, "optimizer param group ", g, " [", globs,
               "] matches no trainable parameter (an earlier group or the frozen set may have taken them)");
  }
  std::vector<ParamGroup> out;
  for (size_t spec = 0; spec < n_specs; ++spec) {
    const bool is_default = spec == config.groups.size();
    const std::string base = is_default ? "default" : "groups[" + std::to_string(spec) + "]";
    const double lr = is_default ? config.lr : config.groups[spec].lr.value_or(config.lr);
    const double wd = is_default ? config.weight_decay : config.groups[spec].weight_decay.value_or(config.weight_decay);
    for (int no_decay = 0; no_decay < 2; ++no_decay) {
      ParamGroup& group = slots[2 * spec + no_decay];
      if (group.params.empty()) continue;
      group.name = no_decay ? base + ".no_decay" : base;
      group.base_lr = group.lr = lr;
      group.weight_decay = no_decay ? 0.0 : wd;
      out.push_back(std::move(group));
    }
  }
  return out;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  std::vector<Tensor> flat;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const auto& [name, t] = groups_[g].params[i];
      DCAE_CHECK(index_.count(name) == 0, "optimizer: parameter '", name, "' is in two param groups");
      DCAE_CHECK(flat.empty() || t.device() == flat.front().device(), "optimizer: parameter '", name, "' is ",
                 t.str(), ", but the first parameter is on ", flat.front().device(),
                 " (one optimizer updates parameters of one device)");
      index_[name] = Index{g, i, flat.size()};
      flat.push_back(t);
    }
  }
  masters_ = MasterWeights(flat);
}

void Optimizer::step() {
  std::vector<PendingUpdate> updates;
  for (const ParamGroup& group : groups_) {
    for (const auto& [name, param] : group.params) {
      const Tensor& grad = param.grad();
      if (!grad.defined()) continue;
      DCAE_CHECK(grad.shape() == param.shape(), "optimizer: gradient ", grad.str(), " of '", name, "' does not match ",
                 param.str());
      const Index& at = index_.at(name);
      updates.push_back({&group, &name, masters_.master(at.master), grad.contiguous(),
                         masters_.has_copy(at.master) ? masters_.param(at.master) : Tensor(), &states_[name]});
    }
  }
  update_all(updates);
  for (const PendingUpdate& u : updates) u.master.bump_version();
}

void Optimizer::update_all(const std::vector<PendingUpdate>& updates) {
  for (const PendingUpdate& u : updates) {
    update(*u.group, *u.name, u.master, u.grad, *u.state);
    if (u.param.defined()) Tensor(u.param).copy_(u.master);
  }
}

void Optimizer::zero_grad() {
  for (const ParamGroup& group : groups_)
    for (const auto& [name, param] : group.params) param.set_grad(Tensor());
}

void Optimizer::set_lr_factor(double factor) {
  for (ParamGroup& group : groups_) group.lr = group.base_lr * factor;
}

std::vector<Tensor> Optimizer::params() const {
  std::vector<Tensor> out;
  for (const ParamGroup& group : groups_)
    for (const auto& [name, t] : group.params) out.push_back(t);
  return out;
}

std::vector<nn::NamedTensor> Optimizer::named_masters() const {
  std::vector<nn::NamedTensor> out;
  for (const ParamGroup& group : groups_)
    for (const auto& [name, t] : group.params) out.emplace_back(name, masters_.master(index_.at(name).master));
  return out;
}

const ParamState& Optimizer::state(const std::string& param_name) const {
  DCAE_CHECK(index_.count(param_name), "optimizer has no parameter '", param_name, "'");
  static const ParamState empty_state;
  auto it = states_.find(param_name);
  return it == states_.end() ? empty_state : it->second;
}

std::vector<nn::NamedTensor> Optimizer::state_tensors() const {
  std::vector<nn::NamedTensor> out;
  for (const ParamGroup& group : groups_) {
    for (const auto& [name, t] : group.params) {
      const size_t m = index_.at(name).master;
      if (masters_.has_copy(m)) out.emplace_back("master." + name, masters_.master(m));
      auto it = states_.find(name);
      if (it == states_.end()) continue;
      for (const auto& [slot, value] : it->second.slots) out.emplace_back(slot + "." + name, value);
    }
  }
  return out;
}

json Optimizer::state_json() const {
  json groups = json::array();
  json steps = json::object();
  for (const ParamGroup& group : groups_) {
    json names = json::array();
    for (const auto& [name, t] : group.params) {
      names.push_back(name);
      auto it = states_.find(name);
      if (it != states_.end()) {
        json slots = json::array();
        for (const auto& [slot, value] : it->second.slots) slots.push_back(slot);
        steps[name] = {{"step", it->second.step}, {"slots", slots}};
      }
    }
    groups.push_back({{"name", group.name}, {"base_lr", group.base_lr}, {"lr", group.lr},
                      {"weight_decay", group.weight_decay}, {"params", names}});
  }
  return {{"type", type()}, {"groups", groups}, {"param_state", steps}};
}

void Optimizer::load_state(const std::map<std::string, Tensor>& tensors, const json& scalars) {
  DCAE_CHECK(scalars.value("type", "") == type(), "optimizer state is for '", scalars.value("type", "?"),
             "', this optimizer is '", type(), "'");
  const json& groups = scalars.at("groups");
  DCAE_CHECK(groups.size() == groups_.size(), "optimizer state has ", groups.size(), " param groups, this optimizer has ",
             groups_.size(), " (did train.trainable or the no_decay/groups patterns change?)");
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<std::string> saved = groups[g].at("params").get<std::vector<std::string>>(), current;
    for (const auto& [name, t] : groups_[g].params) current.push_back(name);
    if (saved != current) {
      std::set<std::string> a(saved.begin(), saved.end()), b(current.begin(), current.end());
      std::string missing, extra;
      for (const std::string& n : b)
        if (!a.count(n)) missing += (missing.empty() ? "" : ", ") + n;
      for (const std::string& n : a)
        if (!b.count(n)) extra += (extra.empty() ? "" : ", ") + n;
      DCAE_FAIL("optimizer state: param group '", groups_[g].name, "' differs from the checkpoint's '",
                groups[g].value("name", "?"), "'; not in checkpoint: [", missing, "]; only in checkpoint: [", extra,
                "]", missing.empty() && extra.empty() ? " (order differs)" : "");
    }
  }
  auto tensor = [&](const std::string& key, const Tensor& like) {
    auto it = tensors.find(key);
    DCAE_CHECK(it != tensors.end(), "optimizer state has no tensor '", key, "'");
    DCAE_CHECK(it->second.shape() == like.shape() && it->second.dtype() == like.dtype(), "optimizer state tensor '",
               key, "' is ", it->second.str(), ", expected ", like.str());
    return it->second;
  };
  // Validate everything before touching any state, so a bad checkpoint leaves the optimizer as it was.
  std::map<std::string, ParamState> states;
  std::vector<std::pair<size_t, Tensor>> masters;
  const json& param_state = scalars.at("param_state");
  for (const auto& [name, at] : index_) {
    const Tensor& master = masters_.master(at.master);
    if (masters_.has_copy(at.master)) masters.emplace_back(at.master, tensor("master." + name, master));
    if (!param_state.contains(name)) continue;
    ParamState& state = states[name];
    state.step = param_state[name].at("step").get<int64_t>();
    for (const std::string& slot : param_state[name].at("slots").get<std::vector<std::string>>()) {
      const Tensor& saved = tensor(slot + "." + name, master);  // state lives on the master's device
      state.slots[slot] = saved.device() == master.device() ? saved.clone() : saved.to(master.device());
    }
  }
  for (const auto& [key, value] : tensors) {
    const size_t dot = key.find('.');
    DCAE_CHECK(dot != std::string::npos && index_.count(key.substr(dot + 1)), "optimizer state tensor '", key,
               "' belongs to no parameter of this optimizer");
  }
  for (const auto& [i, value] : masters) masters_.load_master(i, value);
  // Hyperparameters (lr, weight decay) stay as configured: a resumed run may change them on purpose.
  states_ = std::move(states);
}

}  // namespace dcae::trainer
