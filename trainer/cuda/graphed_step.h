// A whole training step captured once in a CUDA graph and replayed: forward, loss, backward, gradient norm and
// clipping, the optimizer step (AdamW in capturable mode) and anything else `step` launches, with static shapes.
//
//   adamw.make_capturable();
//   auto step = [&] {                      // reads only static tensors; no host read, no host->GPU copy
//     loss = ops::l1_loss(model.forward(static_input), static_target);
//     autograd::backward(loss);
//     adamw.clip_next_step(grad_norm_tensor(adamw.params()), 1.0);
//     adamw.step();
//     adamw.zero_grad();
//   };
//   step();                                // eager warm-up: optimizer state, algorithm choices, plan caches
//   GraphedTrainStep graphed(step, &adamw);
//   graphed.capture();
//   loop: static_input.copy_(batch); adamw.set_lr_factor(schedule(s)); graphed.replay();  // loss: read it after
//
// Tensors `step` assigns to outer variables (the loss) are the graph's outputs: every replay overwrites them in
// place, so read them after a replay (outside the graph) and before the next. Memory the step allocates comes from
// the graph's private pool (core/tensor/cuda/cuda_graph.h): replays allocate nothing.
#pragma once
#include <functional>
#include <memory>

namespace dcae::cuda {
class CudaGraph;
}

namespace dcae::trainer {

class Optimizer;

class GraphedTrainStep {
 public:
  // `optimizer` (may be null) gets stage_step_scalars() before every replay; `device` is the GPU (-1: current).
  GraphedTrainStep(std::function<void()> step, Optimizer* optimizer, int device = -1);
  ~GraphedTrainStep();
  GraphedTrainStep(const GraphedTrainStep&) = delete;
  GraphedTrainStep& operator=(const GraphedTrainStep&) = delete;

  // Records one call of `step` (which must have run eagerly before). Errors name the operation that cannot be
  // captured (a host read such as Tensor::item, a copy from host memory, a synchronisation).
  void capture();
  // One more training step: stages the optimizer's per-step values (lr), then replays on the current stream.
  void replay();
  bool captured() const;
  const cuda::CudaGraph& graph() const { return *graph_; }

 private:
  std::function<void()> step_;
  Optimizer* optimizer_;
  std::unique_ptr<cuda::CudaGraph> graph_;
};

}  // namespace dcae::trainer
