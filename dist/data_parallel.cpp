#include "dist/data_parallel.h"

#include "core/autograd/engine.h"

namespace dcae::dist {

void broadcast_module(nn::Module& model, Communicator& comm, int root) {
  if (comm.size() == 1) return;
  std::vector<std::pair<Tensor, Tensor>> staged;  // (module tensor, contiguous buffer it is broadcast through)
  std::vector<WorkPtr> works;
  for (const auto& [name, t] : model.state()) {
    Tensor buffer = t.is_contiguous() ? t : t.contiguous();
    staged.emplace_back(t, buffer);
    works.push_back(comm.broadcast_async(buffer, root));
  }
  for (auto& work : works) work->wait();
  for (auto& [t, buffer] : staged)
    if (!buffer.is_same(t)) copy_strided(t, buffer);
}

DataParallel::DataParallel(nn::Module& model, std::shared_ptr<Communicator> comm, DataParallelOptions options)
    : model_(model), comm_(std::move(comm)), options_(options) {
  DCAE_CHECK(comm_ != nullptr, "DataParallel needs a communicator");
  DCAE_CHECK(options_.bucket_mb > 0, "DataParallel: bucket_mb must be positive, got ", options_.bucket_mb);
  if (options_.broadcast_parameters) broadcast_module(model_, *comm_);

  // Backward meets parameters roughly in reverse registration order, so buckets are filled from the end.
  std::vector<nn::NamedTensor> trainable;
  for (const auto& named : model_.named_parameters())
    if (named.second.requires_grad()) trainable.push_back(named);
  DCAE_CHECK(!trainable.empty(), "DataParallel: the model has no trainable parameter (",
             model_.named_parameters().size(), " parameters, all frozen)");
  const auto bucket_bytes = static_cast<int64_t>(options_.bucket_mb * 1024 * 1024);
  int64_t filled = 0;
  for (auto it = trainable.rbegin(); it != trainable.rend(); ++it) {
    const Tensor& p = it->second;
    const bool fits = !buckets_.empty() && buckets_.back().slots.front().param.dtype() == p.dtype() &&
                      buckets_.back().slots.front().param.device() == p.device() &&
                      filled + static_cast<int64_t>(p.nbytes()) <= bucket_bytes;
    if (!fits) {
      buckets_.emplace_back();
      filled = 0;
    }
    Bucket& bucket = buckets_.back();
    const int64_t offset = bucket.slots.empty() ? 0 : bucket.slots.back().offset + bucket.slots.back().param.numel();
    bucket.slots.push_back({it->first, p, offset, false});
    filled += static_cast<int64_t>(p.nbytes());
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    const Slot& last = bucket.slots.back();
    bucket.buffer = zeros({last.offset + last.param.numel()}, last.param.dtype(), last.param.device());
    communication_peak_ += static_cast<int64_t>(bucket.buffer.nbytes());
    for (size_t s = 0; s < bucket.slots.size(); ++s) {
      const Tensor& p = bucket.slots[s].param;
      hook_handles_.emplace_back(
          p, autograd::add_grad_ready_hook(p, [this, b, s](const Tensor&) { on_grad_ready(b, s); }));
    }
  }
  end_hook_ = autograd::add_backward_end_hook([this] { finish_gradient_sync(); });
}

DataParallel::~DataParallel() {
  autograd::remove_backward_end_hook(end_hook_);
  for (auto& [param, handle] : hook_handles_) autograd::remove_grad_ready_hook(param, handle);
  // Collectives still in flight read the bucket buffers: let them finish (errors were reported by wait already).
  for (Bucket& bucket : buckets_) {
    if (!bucket.work) continue;
    try {
      bucket.work->wait();
    } catch (const Error&) {
    }
  }
}

void DataParallel::on_grad_ready(size_t b, size_t s) {
  if (!sync_) return;
  pending_ = true;
  Bucket& bucket = buckets_[b];
  Slot& slot = bucket.slots[s];
  if (slot.ready) return;  // a second backward before the first one's sync finished
  copy_strided(bucket.buffer.narrow(0, slot.offset, slot.param.numel()).view(slot.param.shape()), slot.param.grad());
  slot.ready = true;
  ++bucket.ready_count;
  const size_t before = next_launch_;
  launch_ready_buckets();
  started_early_ += static_cast<int64_t>(next_launch_ - before);
}

void DataParallel::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].ready_count == static_cast<int64_t>(buckets_[next_launch_].slots.size()))
    launch(next_launch_++);
}

void DataParallel::launch(size_t b) {
  Bucket& bucket = buckets_[b];
  bucket.work = comm_->all_reduce_async(bucket.buffer, ReduceOp::avg);
  ++started_total_;
}

void DataParallel::finish_gradient_sync() {
  if (!pending_) return;
  pending_ = false;
  // Parameters backward did not reach this time still take part: with the gradient accumulated by earlier
  // micro-steps, or zeros (another rank may have a gradient for them).
  for (; next_launch_ < buckets_.size(); ++next_launch_) {
    Bucket& bucket = buckets_[next_launch_];
    for (Slot& slot : bucket.slots) {
      if (slot.ready) continue;
      Tensor target = bucket.buffer.narrow(0, slot.offset, slot.param.numel());
      if (slot.param.grad().defined())
        copy_strided(target.view(slot.param.shape()), slot.param.grad());
      else
        target.zero_();
    }
    launch(next_launch_);
  }
  next_launch_ = 0;
  for (Bucket& bucket : buckets_) {
    WorkPtr work = std::move(bucket.work);
    bucket.ready_count = 0;
    for (Slot& slot : bucket.slots) slot.ready = false;
    work->wait();
    for (Slot& slot : bucket.slots) {
      Tensor averaged = bucket.buffer.narrow(0, slot.offset, slot.param.numel()).view(slot.param.shape());
      if (slot.param.grad().defined()) {
        Tensor grad = slot.param.grad();
        grad.copy_(averaged);
      } else {
        slot.param.set_grad(averaged.clone());
      }
    }
  }
}

std::vector<std::vector<std::string>> DataParallel::bucket_layout() const {
  std::vector<std::vector<std::string>> layout;
  for (const Bucket& bucket : buckets_) {
    layout.emplace_back();
    for (const Slot& slot : bucket.slots) layout.back().push_back(slot.name);
  }
  return layout;
}

MemoryStats DataParallel::memory() const {
  MemoryStats stats;
  for (const Tensor& p : model_.parameters()) {
    stats.parameters += static_cast<int64_t>(p.nbytes());
    if (p.grad().defined()) stats.gradients += static_cast<int64_t>(p.grad().nbytes());
  }
  for (const Bucket& bucket : buckets_) stats.communication_buffers += static_cast<int64_t>(bucket.buffer.nbytes());
  stats.communication_peak = communication_peak_;
  stats.optimizer_state = optimizer_state_bytes_;
  return stats;
}

}  // namespace dcae::dist
