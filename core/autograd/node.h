// Graph nodes. A Node turns the gradients of its outputs into gradients of its inputs and knows, through its
// edges, which node receives each of them. Leaves that require grad end in an AccumulateGrad node.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::autograd {

class Node;

struct Edge {
  std::shared_ptr<Node> node;  // null: this input needs no gradient
  uint32_t input_nr = 0;       // which output of `node` the gradient belongs to
};

// A tensor kept for backward. Holds a history-free alias (no reference cycle through grad_fn) and the storage
// version at save time, so an in-place edit between forward and backward is reported instead of silently used.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  Tensor get() const;  // throws when the storage was modified in place since it was saved
  bool defined() const { return data_.defined(); }

 private:
  Tensor data_;
  uint64_t version_ = 0;
};

// What the engine needs to make a zero gradient for an output nobody used.
struct OutputInfo {
  Shape shape;
  DType dtype;
  Device device;
};

class Node {
 public:
  explicit Node(std::string name);
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const { return name_; }
  // grads[i] is the gradient of output i (zeros when unused); returns one gradient per edge (undefined allowed
  // where needs_input_grad(i) is false).
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grads) = 0;
  // Drops saved tensors after a backward that did not retain the graph.
  virtual void release_saved() {}

  std::vector<Edge>& edges() { return edges_; }
  const std::vector<Edge>& edges() const { return edges_; }
  std::vector<OutputInfo>& outputs() { return outputs_; }
  const std::vector<OutputInfo>& outputs() const { return outputs_; }
  bool needs_input_grad(size_t i) const { return i < edges_.size() && edges_[i].node != nullptr; }

  // Nodes alive in this process: lets tests prove that frozen computation records nothing.
  static int64_t live_count();

 private:
  std::string name_;
  std::vector<Edge> edges_;
  std::vector<OutputInfo> outputs_;
};

// A node whose backward is a function given by the op that recorded it; what the function captures (usually
// SavedTensors) is freed by release_saved().
class FunctionNode final : public Node {
 public:
  using Backward = std::function<std::vector<Tensor>(const std::vector<Tensor>& grads, const Node& node)>;
  FunctionNode(std::string name, Backward backward) : Node(std::move(name)), backward_(std::move(backward)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;
  void release_saved() override { backward_ = nullptr; }

 private:
  Backward backward_;
};

// Sink for a leaf: adds the incoming gradient into leaf.grad() and then runs the leaf's gradient-ready hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(const Tensor& leaf);
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

// The leaf's unique accumulator (created on first use, shared by every op that reads the leaf).
std::shared_ptr<Node> grad_accumulator(const Tensor& leaf);
// The edge through which a gradient for `t` flows: its grad_fn output, or its accumulator, or none.
Edge gradient_edge(const Tensor& t);

}  // namespace dcae::autograd
