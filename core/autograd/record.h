// How ops attach history to their results. Pruning lives here: nothing is recorded (and nothing saved) unless
// recording is on and some input can reach a tensor that requires grad.
#pragma once
#include <vector>

#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"

namespace dcae::autograd {

// True when an op over `inputs` must record a node.
bool needs_history(const std::vector<Tensor>& inputs);

// Records a FunctionNode named `name` producing `outputs` from `inputs`; backward returns one gradient per input.
// Call only when needs_history(inputs) is true; capture SavedTensor, never Tensor, for what backward reads.
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
            FunctionNode::Backward backward);

}  // namespace dcae::autograd
