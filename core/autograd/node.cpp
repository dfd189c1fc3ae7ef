#include "core/autograd/node.h"

#include <atomic>

namespace dcae::autograd {

namespace {
std::atomic<int64_t> g_live_nodes{0};
}

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  data_ = t.detach();
  version_ = t.version();
}

Tensor SavedTensor::get() const {
  if (data_.defined()) {
    DCAE_CHECK(data_.version() == version_, "a tensor saved for backward (", data_.str(),
               ") was modified in place after it was saved (version ", data_.version(), ", saved at version ",
               version_, "); use an out-of-place op or clone() before modifying it");
  }
  return data_;
}

Node::Node(std::string name) : name_(std::move(name)) { ++g_live_nodes; }
Node::~Node() { --g_live_nodes; }
int64_t Node::live_count() { return g_live_nodes.load(); }

std::vector<Tensor> FunctionNode::apply(std::vector<Tensor>&& grads) {
  DCAE_CHECK(backward_ != nullptr, "backward through '", name(),
             "' a second time, but its saved tensors were freed by the first backward; pass retain_graph=true "
             "to the first call");
  std::vector<Tensor> result = backward_(grads, *this);
  DCAE_CHECK(result.size() == edges().size(), "backward of '", name(), "' returned ", result.size(),
             " gradients for ", edges().size(), " inputs");
  return result;
}

AccumulateGrad::AccumulateGrad(const Tensor& leaf) : Node("AccumulateGrad"), leaf_(leaf.impl_ptr()) {
  outputs().push_back({leaf.shape(), leaf.dtype(), leaf.device()});
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grads) {
  std::shared_ptr<TensorImpl> impl = leaf_.lock();
  if (!impl) return {};
  Tensor leaf(impl);
  Tensor incoming = std::move(grads[0]);
  DCAE_CHECK(incoming.shape() == leaf.shape(), "gradient ", incoming.str(), " does not match its leaf ", leaf.str());
  if (!leaf.grad().defined()) {
    // Take the incoming buffer when nothing else can see it; otherwise keep a private copy.
    const bool exclusive = incoming.impl_ptr().use_count() == 1 && incoming.storage().use_count() == 1 &&
                           incoming.is_contiguous() && incoming.dtype() == leaf.dtype() &&
                           incoming.numel() * dtype_size(incoming.dtype()) == incoming.storage()->nbytes();
    leaf.set_grad(exclusive ? incoming.detach() : incoming.to(leaf.dtype()).clone());
  } else {
    Tensor grad = leaf.grad();
    grad.add_(incoming);
  }
  for (auto& [handle, hook] : impl->autograd.grad_ready_hooks) hook(leaf);
  return {};
}

std::shared_ptr<Node> grad_accumulator(const Tensor& leaf) {
  AutogradState& state = leaf.impl()->autograd;
  if (auto existing = state.grad_accumulator.lock()) return existing;
  auto node = std::make_shared<AccumulateGrad>(leaf);
  state.grad_accumulator = node;
  return node;
}

Edge gradient_edge(const Tensor& t) {
  const AutogradState& state = t.impl()->autograd;
  if (state.grad_fn) return {state.grad_fn, state.output_nr};
  if (state.requires_grad) return {grad_accumulator(t), 0};
  return {};
}

}  // namespace dcae::autograd
