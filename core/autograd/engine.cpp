#include "core/autograd/engine.h"

#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"

namespace dcae::autograd {

namespace {

std::mutex g_hook_mutex;
std::map<int, std::function<void()>> g_end_hooks;
int g_next_handle = 1;

// Gradients arriving at one node, one slot per output; `owned` marks slots we may add into in place.
struct InputBuffer {
  std::vector<Tensor> grads;
  std::vector<bool> owned;

  explicit InputBuffer(size_t n) : grads(n), owned(n, false) {}
  void add(size_t slot, Tensor grad) {
    if (!grad.defined()) return;
    if (!grads[slot].defined()) {
      grads[slot] = std::move(grad);
    } else {
      if (!owned[slot]) {
        grads[slot] = grads[slot].clone();
        owned[slot] = true;
      }
      grads[slot].add_(grad);
    }
  }
};

}  // namespace

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  backward(std::vector<Tensor>{root}, std::vector<Tensor>{grad}, retain_graph);
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& root_grads, bool retain_graph) {
  DCAE_CHECK(roots.size() == root_grads.size(), "backward: ", roots.size(), " roots but ", root_grads.size(),
             " gradients");
  NoGradGuard no_grad;

  std::vector<Edge> root_edges;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& root = roots[i];
    DCAE_CHECK(root.defined() && root.requires_grad(), "backward from ", root.str(),
               ", which does not require grad and has no grad_fn");
    if (!root_grads[i].defined()) {
      DCAE_CHECK(root.numel() == 1, "backward from non-scalar ", root.str(), " needs an explicit gradient");
    } else {
      DCAE_CHECK(root_grads[i].shape() == root.shape(), "backward: gradient ", root_grads[i].str(),
                 " does not match root ", root.str());
    }
    root_edges.push_back(gradient_edge(root));
  }

  // Count, for every reachable node, how many edges lead into it.
  std::unordered_map<Node*, int> dependencies;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack;
  for (const Edge& e : root_edges)
    if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Edge& e : node->edges()) {
      if (!e.node) continue;
      ++dependencies[e.node.get()];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  std::unordered_map<Node*, InputBuffer> buffers;
  std::unordered_map<Node*, std::shared_ptr<Node>> keep_alive;
  auto buffer_for = [&](const std::shared_ptr<Node>& node) -> InputBuffer& {
    auto it = buffers.find(node.get());
    if (it == buffers.end()) {
      it = buffers.emplace(node.get(), InputBuffer(node->outputs().size())).first;
      keep_alive[node.get()] = node;
    }
    return it->second;
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& root = roots[i];
    Tensor seed = root_grads[i].defined() ? root_grads[i] : ones(root.shape(), root.dtype(), root.device());
    buffer_for(root_edges[i].node).add(root_edges[i].input_nr, seed);
  }

  std::deque<std::shared_ptr<Node>> ready;
  for (const Edge& e : root_edges)
    if (dependencies[e.node.get()] == 0 &&
        std::find(ready.begin(), ready.end(), e.node) == ready.end())
      ready.push_back(e.node);

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.front();
    ready.pop_front();
    InputBuffer buffer = std::move(buffers.at(node.get()));
    buffers.erase(node.get());
    for (size_t slot = 0; slot < buffer.grads.size(); ++slot) {
      if (!buffer.grads[slot].defined()) {
        const OutputInfo& info = node->outputs()[slot];
        buffer.grads[slot] = zeros(info.shape, info.dtype, info.device);
      }
    }
    std::vector<Tensor> input_grads = node->apply(std::move(buffer.grads));
    if (!retain_graph) node->release_saved();
    for (size_t i = 0; i < node->edges().size(); ++i) {
      const Edge& edge = node->edges()[i];
      if (!edge.node) continue;
      if (input_grads[i].defined()) {
        const OutputInfo& info = edge.node->outputs()[edge.input_nr];
        DCAE_CHECK(input_grads[i].shape() == info.shape, "backward of '", node->name(), "' produced gradient ",
                   input_grads[i].str(), " for input ", i, ", expected shape ", shape_str(info.shape));
        buffer_for(edge.node).add(edge.input_nr, std::move(input_grads[i]));
      } else {
        buffer_for(edge.node);
      }
      if (--dependencies[edge.node.get()] == 0) ready.push_back(edge.node);
    }
    keep_alive.erase(node.get());
  }

  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(g_hook_mutex);
    for (auto& [handle, hook] : g_end_hooks) hooks.push_back(hook);
  }
  for (auto& hook : hooks) hook();
}

int add_grad_ready_hook(const Tensor& leaf, GradReadyHook hook) {
  DCAE_CHECK(leaf.is_leaf() && leaf.requires_grad(), "gradient-ready hooks go on leaves that require grad, got ",
             leaf.str());
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  const int handle = g_next_handle++;
  leaf.impl()->autograd.grad_ready_hooks.emplace_back(handle, std::move(hook));
  return handle;
}

void remove_grad_ready_hook(const Tensor& leaf, int handle) {
  auto& hooks = leaf.impl()->autograd.grad_ready_hooks;
  std::erase_if(hooks, [&](const auto& entry) { return entry.first == handle; });
}

int add_backward_end_hook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  const int handle = g_next_handle++;
  g_end_hooks.emplace(handle, std::move(hook));
  return handle;
}

void remove_backward_end_hook(int handle) {
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  g_end_hooks.erase(handle);
}

}  // namespace dcae::autograd
