// Backward: walks the graph from the roots in dependency order, sums gradients that meet at a node, fills leaf
// gradients and fires their gradient-ready hooks, then the end-of-backward hooks.
#pragma once
#include <functional>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::autograd {

// root must be a scalar unless `grad` (same shape as root) is given.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph = false);

// Called on a leaf once its gradient for this backward is complete (data-parallel layers start their reduction
// here). Returns a handle for removal.
int add_grad_ready_hook(const Tensor& leaf, GradReadyHook hook);
void remove_grad_ready_hook(const Tensor& leaf, int handle);

// Called once at the end of every backward on this process.
int add_backward_end_hook(std::function<void()> hook);
void remove_backward_end_hook(int handle);

}  // namespace dcae::autograd
