// FullyShardedModel's per-step schedule: all-gather before a unit's forward (and again when its backward starts),
// reshard after, reduce-scatter of its gradients into fp32 shards once backward has produced them all, and the
// backward-end sweep that closes whatever backward did not reach.
#include <algorithm>

#include "core/autograd/grad_mode.h"
#include "core/autograd/record.h"
#include "dist/fsdp_internal.h"
#include "dist/storage_swap.h"

namespace dcae::dist {

void FullyShardedModel::start_gather(Unit& unit, Phase phase) {
  DCAE_CHECK(unit.state == Unit::State::sharded, "FSDP: unit '", unit.name, "' is already being gathered");
  (phase == Phase::forward ? unit.info.forward_gathers : unit.info.backward_gathers) += 1;
  unit.state = Unit::State::gathering;
  if (unit.params.empty()) return;
  const Device device = params_[unit.params.front()].shard.device();
  // Copy-in casts every shard (fp32 master or frozen compute-dtype shard) to the compute dtype: half the bytes
  // on the wire for bf16.
  unit.gather_in = empty({unit.gather_numel}, compute_dtype_, device);
  for (size_t i : unit.params) {
    const Param& q = params_[i];
    copy_strided(unit.gather_in.narrow(0, q.gather_offset, q.layout.shard_numel()).view(q.layout.shard_shape()),
                 q.shard.detach());
  }
  unit.gather_out = empty({comm_->size() * unit.gather_numel}, compute_dtype_, device);
  track_comm(static_cast<int64_t>(unit.gather_in.nbytes() + unit.gather_out.nbytes()));
  unit.gather_work = comm_->all_gather_async(unit.gather_out, unit.gather_in);
}

void FullyShardedModel::finish_gather(Unit& unit) {
  if (unit.state != Unit::State::gathering) return;
  if (unit.gather_work) {
    WorkPtr work = std::move(unit.gather_work);
    work->wait();
    for (size_t i : unit.params) {
      const Param& q = params_[i];
      const ShardLayout& layout = q.layout;
      reallocate_storage(q.param);
      Tensor rows = q.param.detach().view({layout.rows, layout.row_numel});
      for (int r = 0; r < comm_->size(); ++r) {
        const int64_t n = layout.valid_rows(r);
        if (n == 0) continue;
        Tensor from = unit.gather_out.narrow(0, r * unit.gather_numel + q.gather_offset, n * layout.row_numel);
        copy_strided(rows.narrow(0, layout.row_begin(r), n), from.view({n, layout.row_numel}));
      }
    }
    track_comm(-static_cast<int64_t>(unit.gather_in.nbytes() + unit.gather_out.nbytes()));
    unit.gather_in = Tensor();
    unit.gather_out = Tensor();
  }
  unit.state = Unit::State::gathered;
}

void FullyShardedModel::ensure_gathered(Unit& unit, Phase phase) {
  if (unit.state == Unit::State::sharded) start_gather(unit, phase);
  finish_gather(unit);
}

void FullyShardedModel::reshard(Unit& unit) {
  finish_gather(unit);  // a prefetch in flight still has to complete on every rank
  if (unit.state == Unit::State::sharded) return;
  for (size_t i : unit.params) release_storage(params_[i].param);
  unit.state = Unit::State::sharded;
}

void FullyShardedModel::reshard_all() {
  for (Unit& unit : units_) reshard(unit);
}

void FullyShardedModel::prefetch_forward(size_t after) {
  if (!options_.prefetch) return;
  auto it = std::find(last_forward_order_.begin(), last_forward_order_.end(), after);
  if (it == last_forward_order_.end() || ++it == last_forward_order_.end()) return;
  if (units_[*it].state == Unit::State::sharded) start_gather(units_[*it], Phase::forward);
}

void FullyShardedModel::prefetch_backward(size_t before) {
  if (!options_.prefetch) return;
  auto it = std::find(forward_order_.begin(), forward_order_.end(), before);
  while (it != forward_order_.begin()) {
    Unit& unit = units_[*--it];
    if (!unit.backward_pending) continue;
    if (unit.state == Unit::State::sharded) start_gather(unit, Phase::backward);
    return;
  }
}

Tensor FullyShardedModel::forward(const std::function<Tensor()>& run) {
  DCAE_CHECK(!in_forward_, "FSDP: forward() called inside forward()");
  DCAE_CHECK(!step_active_,
             "FSDP: forward() called again before the previous forward's backward ran (its "
             "gathered units would be freed under it); run backward first, or run evaluation after the step");
  // Root pre-forward: the root unit and every unit no wrapper drives (all started before any is awaited).
  std::vector<size_t> eager;
  for (size_t u = 0; u < units_.size(); ++u)
    if (!units_[u].wrapped && !units_[u].intercepted && !units_[u].params.empty()) eager.push_back(u);
  for (size_t u : eager)
    if (units_[u].state == Unit::State::sharded) start_gather(units_[u], Phase::forward);
  for (size_t u : eager) {
    finish_gather(units_[u]);
    units_[u].used = true;
  }
  forward_order_.clear();
  in_forward_ = true;
  Tensor out;
  try {
    out = run();
  } catch (...) {
    in_forward_ = false;
    reshard_all();
    throw;
  }
  in_forward_ = false;
  if (!autograd::GradMode::is_enabled() || !out.defined() || !out.requires_grad()) {
    reshard_all();  // no backward will come
    for (Unit& unit : units_) unit.used = unit.backward_pending = unit.input_grad_pending = false;
    return out;
  }
  step_active_ = true;
  // A frozen eager unit whose weights no backward node kept (nothing but the parameter references its storage)
  // is done: below the first trainable layer, or only feeding tensors that need no grad.
  for (size_t u : eager) {
    Unit& unit = units_[u];
    // A hooked unit on its first forward: gathered up front, then run_unit took it over.
    if (std::find(forward_order_.begin(), forward_order_.end(), u) != forward_order_.end()) continue;
    if (unit.trainable_params > 0) {
      unit.backward_pending = true;
      continue;
    }
    bool referenced = false;
    for (size_t i : unit.params) referenced = referenced || params_[i].param.storage().use_count() > 1;
    if (referenced)
      unit.backward_pending = true;
    else
      reshard(unit);
  }
  return out;
}

Tensor FullyShardedModel::run_unit(const std::string& unit_name, const Tensor& x,
                                   const std::function<Tensor(const Tensor&)>& fn) {
  return run_unit_at(unit_index(unit_name), x, fn);
}

Tensor FullyShardedModel::run_unit_at(size_t u, const Tensor& x, const std::function<Tensor(const Tensor&)>& fn) {
  Unit& unit = units_[u];
  const std::string& unit_name = unit.name;
  DCAE_CHECK(in_forward_, "FSDP: unit '", unit_name,
             "' ran outside FullyShardedModel::forward(); its parameters are not gathered there");
  DCAE_CHECK(std::find(forward_order_.begin(), forward_order_.end(), u) == forward_order_.end(), "FSDP: unit '",
             unit_name, "' ran twice in one forward (shared weights need one unit around both uses)");
  forward_order_.push_back(u);
  ensure_gathered(unit, Phase::forward);
  unit.used = true;
  prefetch_forward(u);

  const bool recording = autograd::GradMode::is_enabled();
  const bool input_needs_grad = recording && x.defined() && x.requires_grad();
  const bool needs_backward = recording && (unit.trainable_params > 0 || input_needs_grad);
  Tensor input = x;
  if (input_needs_grad) {
    // Post-backward on the input side: fires once every op of the unit that reads x has run its backward.
    input = x.detach();
    autograd::record("fsdp_post_backward", {x}, {input},
                     [this, u](const std::vector<Tensor>& grads, const autograd::Node&) {
                       on_input_grad(u);
                       return std::vector<Tensor>{grads[0]};
                     });
    unit.input_grad_pending = true;
  }
  Tensor out;
  if (needs_backward) {
    out = fn(input);
  } else {
    // Nothing below needs a gradient through this unit: record nothing, keep no activations.
    autograd::NoGradGuard no_grad;
    out = fn(input);
    if (recording) ++unit.info.forwards_without_backward;
  }
  if (needs_backward && out.defined() && out.requires_grad()) {
    // Pre-backward on the output side: gathers the unit again before any of its backward ops runs.
    Tensor hooked = out.detach();
    autograd::record("fsdp_pre_backward", {out}, {hooked},
                     [this, u](const std::vector<Tensor>& grads, const autograd::Node&) {
                       ensure_gathered(units_[u], Phase::backward);
                       prefetch_backward(u);
                       return std::vector<Tensor>{grads[0]};
                     });
    unit.backward_pending = true;
    if (options_.reshard_after_forward) reshard(unit);
    return hooked;
  }
  unit.input_grad_pending = false;
  reshard(unit);
  return out;
}

void FullyShardedModel::on_grad_ready(size_t i) {
  Param& q = params_[i];
  Unit& unit = units_[q.unit];
  if (!step_active_ || q.grad_ready) return;
  q.grad_ready = true;
  if (++unit.grads_ready < unit.trainable_params) return;
  reduce_scatter(unit);
  maybe_reshard_after_backward(unit);
}

void FullyShardedModel::on_input_grad(size_t u) {
  Unit& unit = units_[u];
  unit.input_grad_pending = false;
  maybe_reshard_after_backward(unit);
}

// Every backward op that read the gathered parameters has run once all trainable gradients are complete (each op
// reading a trainable parameter sends it a gradient) and the input gradient is complete (ops reading frozen
// parameters lie on a path to the input or to a trainable parameter). Eager units have no input hook, so only an
// all-trainable one can be freed here.
void FullyShardedModel::maybe_reshard_after_backward(Unit& unit) {
  if (!unit.backward_pending || unit.input_grad_pending) return;
  if (unit.trainable_params > 0 && !unit.reduced) return;
  if (!unit.wrapped && !unit.intercepted && !unit.all_trainable) return;
  unit.backward_pending = false;
  reshard(unit);
}

void FullyShardedModel::reduce_scatter(Unit& unit) {
  finish_reduce();  // one reduce-scatter staging buffer in flight at a time
  const int world = comm_->size();
  const Device device = params_[unit.params.front()].shard.device();
  auto pending = std::make_unique<PendingReduce>();
  pending->unit = static_cast<size_t>(&unit - units_.data());
  // Rank r's block holds rank r's rows of every trainable gradient (zero padded), so the scatter hands each rank
  // exactly its shard rows.
  pending->in = zeros({world * unit.grad_numel}, options_.reduce_dtype, device);
  pending->out = empty({unit.grad_numel}, options_.reduce_dtype, device);
  for (size_t i : unit.params) {
    Param& q = params_[i];
    if (!q.trainable || !q.param.grad().defined()) continue;
    const ShardLayout& layout = q.layout;
    Tensor grad_rows = q.param.grad().reshape({layout.rows, layout.row_numel});
    for (int r = 0; r < world; ++r) {
      const int64_t n = layout.valid_rows(r);
      if (n == 0) continue;
      Tensor to = pending->in.narrow(0, r * unit.grad_numel + q.grad_offset, n * layout.row_numel);
      copy_strided(to.view({n, layout.row_numel}), grad_rows.narrow(0, layout.row_begin(r), n));
    }
    q.param.set_grad(Tensor());  // the unsharded gradient is not needed any more
  }
  track_comm(static_cast<int64_t>(pending->in.nbytes() + pending->out.nbytes()));
  pending->work = comm_->reduce_scatter_async(pending->out, pending->in, ReduceOp::avg);
  unit.reduced = true;
  ++unit.info.reduce_scatters;
  pending_reduce_ = std::move(pending);
}

void FullyShardedModel::finish_reduce() {
  if (!pending_reduce_) return;
  std::unique_ptr<PendingReduce> pending = std::move(pending_reduce_);
  pending->work->wait();
  for (size_t i : units_[pending->unit].params) {
    Param& q = params_[i];
    if (!q.trainable) continue;
    Tensor averaged = pending->out.narrow(0, q.grad_offset, q.layout.shard_numel()).view(q.layout.shard_shape());
    if (q.shard.grad().defined()) {
      Tensor grad = q.shard.grad();
      grad.add_(averaged);  // gradient accumulation over micro-steps
    } else {
      Tensor grad = empty(q.layout.shard_shape(), q.shard.dtype(), q.shard.device());
      copy_strided(grad, averaged);
      q.shard.set_grad(grad);
    }
  }
  track_comm(-static_cast<int64_t>(pending->in.nbytes() + pending->out.nbytes()));
}

void FullyShardedModel::on_backward_end() {
  if (!step_active_) return;  // a backward that did not go through this model's forward
  step_active_ = false;
  // Units backward did not finish (unused parameters, gradients that never reached them) reduce what they have, in
  // unit order, so every rank issues the same collectives.
  for (Unit& unit : units_)
    if (unit.used && unit.trainable_params > 0 && !unit.reduced) reduce_scatter(unit);
  finish_reduce();
  reshard_all();
  for (Unit& unit : units_) {
    unit.used = unit.backward_pending = unit.input_grad_pending = unit.reduced = false;
    unit.grads_ready = 0;
  }
  for (Param& q : params_) q.grad_ready = false;
  last_forward_order_ = forward_order_;
}

}  // namespace dcae::dist
