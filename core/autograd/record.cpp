#include "core/autograd/record.h"

namespace dcae::autograd {

bool needs_history(const std::vector<Tensor>& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
            FunctionNode::Backward backward) {
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->edges().reserve(inputs.size());
  for (const Tensor& t : inputs) node->edges().push_back(t.defined() ? gradient_edge(t) : Edge{});
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    node->outputs().push_back({out.shape(), out.dtype(), out.device()});
    AutogradState& state = out.impl()->autograd;
    DCAE_CHECK(state.grad_fn == nullptr && !state.requires_grad, "op '", name,
               "' tried to record history on a tensor that already has some (", out.str(), ")");
    state.grad_fn = node;
    state.output_nr = static_cast<uint32_t>(i);
  }
}

}  // namespace dcae::autograd
