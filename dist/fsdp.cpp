// FullyShardedModel: set-up (units, shards), state access and accounting. The per-step schedule is in
// fsdp_schedule.cpp.
#include <cmath>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "dist/data_parallel.h"
#include "dist/fsdp_internal.h"
#include "dist/storage_swap.h"
#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::dist {

FullyShardedModel::FullyShardedModel(nn::Module& model, std::shared_ptr<Communicator> comm, FsdpOptions options)
    : model_(model), comm_(std::move(comm)), options_(std::move(options)) {
  DCAE_CHECK(comm_ != nullptr, "FSDP needs a communicator");
  const std::vector<nn::NamedTensor> named = model_.named_parameters();
  DCAE_CHECK(!named.empty(), "FSDP: the model has no parameters");
  const Device device = named.front().second.device();
  compute_dtype_ = options_.compute_dtype.value_or(named.front().second.dtype());
  DCAE_CHECK(is_floating(compute_dtype_), "FSDP: compute dtype must be a float type, got ", dtype_name(compute_dtype_));
  DCAE_CHECK(is_floating(options_.reduce_dtype), "FSDP: reduce dtype must be a float type, got ",
             dtype_name(options_.reduce_dtype));
  for (const auto& [name, p] : named) {
    DCAE_CHECK(is_floating(p.dtype()) && p.device() == device, "FSDP: parameter '", name, "' is ", p.str(),
               "; every parameter must be a float tensor on ", device);
    DCAE_CHECK(p.is_leaf(), "FSDP: parameter '", name, "' (", p.str(), ") is not a leaf tensor");
  }
  DCAE_CHECK(comm_->supports(device), "FSDP: the ", comm_->backend(), " communicator cannot move tensors on ", device);

  // Units: the root first, then the modules each glob matches (in module order). Within one glob only the
  // outermost matches count, so "blocks.*" makes one unit per block, not one per layer inside the blocks too.
  units_.emplace_back();
  units_.back().name = "<root>";
  const auto modules = model_.named_modules();
  auto inside = [](const std::string& name, const std::string& ancestor) {
    return ancestor.empty() || name.compare(0, ancestor.size() + 1, ancestor + ".") == 0;
  };
  for (const std::string& glob : options_.units) {
    bool matched = false;
    std::vector<std::string> outermost;
    for (const auto& [name, module] : modules) {
      if (!nn::glob_match(glob, name)) continue;
      matched = true;
      bool nested = false;
      for (const std::string& outer : outermost) nested = nested || inside(name, outer);
      if (nested) continue;
      outermost.push_back(name);
      bool known = false;
      for (const Unit& unit : units_) known = known || unit.module == module;
      if (known) continue;
      units_.emplace_back();
      units_.back().name = name;
      units_.back().module = module;
    }
    DCAE_CHECK(matched, "FSDP unit glob '", glob, "' matches no module (", modules.size(), " modules, e.g. '",
               modules.size() > 1 ? modules[1].first : std::string(), "')");
  }

  for (const Unit& unit : units_) {
    const auto* layer = dynamic_cast<const nn::Layer*>(unit.module);
    DCAE_CHECK(layer == nullptr || !layer->has_forward_interceptor(), "FSDP unit '", unit.name,
               "': its module already has a forward interceptor (is the model sharded twice?)");
  }
  if (options_.broadcast_parameters) broadcast_module(model_, *comm_);

  const int world = comm_->size();
  const int rank = comm_->rank();
  params_.resize(named.size());
  for (size_t i = 0; i < named.size(); ++i) {
    const auto& [name, p] = named[i];
    Param& q = params_[i];
    q.name = name;
    q.param = p;
    q.layout = ShardLayout::make(p.shape(), world);
    q.trainable = p.requires_grad();
    // The deepest unit whose module contains the parameter.
    int64_t best_length = -1;
    for (size_t u = 1; u < units_.size(); ++u) {
      const std::string& prefix = units_[u].name;
      if (inside(name, prefix) && static_cast<int64_t>(prefix.size()) > best_length) {
        best_length = static_cast<int64_t>(prefix.size());
        q.unit = u;
      }
    }
    Unit& unit = units_[q.unit];
    unit.params.push_back(i);
    q.gather_offset = unit.gather_numel;
    unit.gather_numel += q.layout.shard_numel();
    if (q.trainable) {
      q.grad_offset = unit.grad_numel;
      unit.grad_numel += q.layout.shard_numel();
      ++unit.trainable_params;
    }

    // The shard: this rank's rows, zero padded. Trainable: an fp32 (f64) master; frozen: the compute dtype only.
    const DType master = (p.dtype() == DType::f64 || compute_dtype_ == DType::f64) ? DType::f64 : DType::f32;
    q.shard = zeros(q.layout.shard_shape(), q.trainable ? master : compute_dtype_, device);
    const int64_t n = q.layout.valid_rows(rank);
    if (n > 0) {
      Tensor rows = p.detach().reshape({q.layout.rows, q.layout.row_numel}).narrow(0, q.layout.row_begin(rank), n);
      copy_strided(q.shard.view({q.layout.rows_per_rank, q.layout.row_numel}).narrow(0, 0, n), rows);
    }
    q.shard.set_requires_grad(q.trainable);

    // The model's tensor becomes the unsharded parameter in the compute dtype, with no memory until gathered.
    nn::assign_in_place(p, empty(p.shape(), compute_dtype_, device));
    p.set_grad(Tensor());
    release_storage(p);
    if (q.trainable) q.hook = autograd::add_grad_ready_hook(p, [this, i](const Tensor&) { on_grad_ready(i); });
  }
  for (Unit& unit : units_) {
    unit.all_trainable = !unit.params.empty() && unit.trainable_params == static_cast<int64_t>(unit.params.size());
    unit.info.name = unit.name;
    unit.info.trainable = unit.trainable_params > 0;
    for (size_t i : unit.params) unit.info.params.push_back(params_[i].name);
  }
  // Per-unit hooks: the unit's module runs through run_unit whenever its parent calls it via operator().
  for (size_t u = 1; u < units_.size(); ++u) {
    Unit& unit = units_[u];
    auto* layer = dynamic_cast<nn::Layer*>(unit.module);
    if (layer == nullptr || unit.params.empty()) continue;
    layer->set_forward_interceptor(
        [this, u](const Tensor& x, const std::function<Tensor(const Tensor&)>& run) {
          Unit& hooked = units_[u];
          hooked.intercepted = true;
          hooked.info.wrapped = true;
          return run_unit_at(u, x, run);
        });
    unit.hooked_layer = layer;
  }
  end_hook_ = autograd::add_backward_end_hook([this] { on_backward_end(); });
}

FullyShardedModel::~FullyShardedModel() {
  autograd::remove_backward_end_hook(end_hook_);
  for (Unit& unit : units_)
    if (unit.hooked_layer != nullptr) unit.hooked_layer->set_forward_interceptor(nullptr);
  for (Param& q : params_)
    if (q.trainable) autograd::remove_grad_ready_hook(q.param, q.hook);
  // Collectives in flight read our staging buffers: let them finish (a failure was already reported by wait).
  try {
    if (pending_reduce_) pending_reduce_->work->wait();
    for (Unit& unit : units_)
      if (unit.gather_work) unit.gather_work->wait();
  } catch (const Error&) {
  }
}

size_t FullyShardedModel::unit_index(const std::string& name) const {
  for (size_t u = 0; u < units_.size(); ++u)
    if (units_[u].name == name) return u;
  std::string known;
  for (const Unit& unit : units_) known += (known.empty() ? "'" : ", '") + unit.name + "'";
  DCAE_FAIL("FSDP has no unit named '", name, "' (units: ", known, ")");
}

std::shared_ptr<nn::Layer> FullyShardedModel::wrap(const std::string& unit_name, std::shared_ptr<nn::Layer> layer) {
  Unit& unit = units_[unit_index(unit_name)];
  DCAE_CHECK(layer != nullptr && unit.module == static_cast<nn::Module*>(layer.get()),
             "FSDP wrap: the layer given for unit '", unit_name, "' is not that unit's module");
  unit.wrapped = true;
  unit.info.wrapped = true;
  return std::make_shared<ShardedLayer>(*this, unit_name, std::move(layer));
}

std::vector<nn::NamedTensor> FullyShardedModel::named_shards() const {
  std::vector<nn::NamedTensor> out;
  for (const Param& q : params_) out.emplace_back(q.name, q.shard);
  return out;
}

std::vector<nn::NamedTensor> FullyShardedModel::trainable_shards() const {
  std::vector<nn::NamedTensor> out;
  for (const Param& q : params_)
    if (q.trainable) out.emplace_back(q.name, q.shard);
  return out;
}

const ShardLayout& FullyShardedModel::layout(const std::string& param_name) const {
  for (const Param& q : params_)
    if (q.name == param_name) return q.layout;
  DCAE_FAIL("FSDP has no parameter named '", param_name, "'");
}

double FullyShardedModel::grad_norm() {
  // Padding rows hold zero gradients. CPU shards sum their squares in double, device shards in f32 on the device
  // (one partial sum per shard, one host read); the total travels on the shards' device (NCCL moves no CPU tensor).
  double local = 0.0;
  std::vector<Tensor> partial;
  Device device = Device::cpu();
  for (const Param& q : params_) {
    if (!q.trainable || !q.shard.grad().defined()) continue;
    const Tensor& grad = q.shard.grad();
    device = grad.device();
    autograd::NoGradGuard no_grad;
    if (device.is_cpu())
      local += ops::sum(ops::square(ops::cast(grad, DType::f64))).item<double>();
    else
      partial.push_back(ops::reshape(ops::sum(ops::square(ops::cast(grad, DType::f32))), {1}));
  }
  if (!partial.empty()) {
    autograd::NoGradGuard no_grad;
    local += ops::sum(ops::concat(partial, 0)).item<double>();
  }
  if (!comm_->supports(device)) device = params_.front().shard.device();
  Tensor total = scalar_tensor(local, DType::f64, device).view({1});
  comm_->all_reduce(total, ReduceOp::sum);
  return std::sqrt(total.item<double>());
}

std::vector<nn::NamedTensor> FullyShardedModel::gather_full_parameters() {
  const int world = comm_->size();
  std::vector<Tensor> gathered;
  std::vector<WorkPtr> works;
  for (const Param& q : params_) {
    gathered.push_back(empty({world * q.layout.shard_numel()}, q.shard.dtype(), q.shard.device()));
    works.push_back(comm_->all_gather_async(gathered.back(), q.shard.detach().view({-1})));
  }
  std::vector<nn::NamedTensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    works[i]->wait();
    const ShardLayout& layout = params_[i].layout;
    Tensor full = empty(layout.full_shape, params_[i].shard.dtype(), params_[i].shard.device());
    Tensor rows = full.view({layout.rows, layout.row_numel});
    for (int r = 0; r < world; ++r) {
      const int64_t n = layout.valid_rows(r);
      if (n > 0)
        copy_strided(rows.narrow(0, layout.row_begin(r), n),
                     gathered[i].narrow(0, r * layout.shard_numel(), n * layout.row_numel).view({n, layout.row_numel}));
    }
    out.emplace_back(params_[i].name, full);
  }
  return out;
}

std::vector<ShardedTensor> FullyShardedModel::sharded_state() const {
  std::vector<ShardedTensor> out;
  for (const Param& q : params_) out.push_back(sharded_like(q.name, q.name, q.shard));
  return out;
}

ShardedTensor FullyShardedModel::sharded_like(const std::string& param_name, const std::string& save_name,
                                              const Tensor& shard_like) const {
  for (const Param& q : params_) {
    if (q.name != param_name) continue;
    DCAE_CHECK(shard_like.shape() == q.layout.shard_shape(), "FSDP: '", save_name, "' is ", shard_like.str(),
               ", but shards of '", param_name, "' have shape ", shape_str(q.layout.shard_shape()));
    const int rank = comm_->rank();
    return {save_name,
            q.layout.full_shape,
            q.trainable,
            q.layout.row_begin(rank),
            q.layout.row_end(rank),
            shard_like.detach().narrow(0, 0, q.layout.valid_rows(rank))};
  }
  DCAE_FAIL("FSDP has no parameter named '", param_name, "' (for '", save_name, "')");
}

std::vector<FullyShardedModel::UnitInfo> FullyShardedModel::units() const {
  std::vector<UnitInfo> out;
  for (const Unit& unit : units_) {
    out.push_back(unit.info);
    out.back().gathered = unit.state != Unit::State::sharded;
  }
  return out;
}

MemoryStats FullyShardedModel::memory() const {
  MemoryStats stats;
  for (const Param& q : params_) {
    stats.parameters += static_cast<int64_t>(q.shard.nbytes());
    stats.gathered_parameters += static_cast<int64_t>(q.param.storage()->nbytes());
    if (q.shard.grad().defined()) stats.gradients += static_cast<int64_t>(q.shard.grad().nbytes());
    if (q.param.grad().defined()) stats.gradients += static_cast<int64_t>(q.param.grad().nbytes());
  }
  stats.optimizer_state = optimizer_state_bytes_;
  stats.communication_buffers = comm_bytes_;
  stats.communication_peak = comm_peak_;
  return stats;
}

void FullyShardedModel::track_comm(int64_t delta) {
  comm_bytes_ += delta;
  comm_peak_ = std::max(comm_peak_, comm_bytes_);
}

}  // namespace dcae::dist
