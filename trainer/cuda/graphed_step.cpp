#include "trainer/cuda/graphed_step.h"

#include "core/tensor/cuda/cuda_graph.h"
#include "core/tensor/error.h"
#include "trainer/optim/optimizer.h"

namespace dcae::trainer {

GraphedTrainStep::GraphedTrainStep(std::function<void()> step, Optimizer* optimizer, int device)
    : step_(std::move(step)), optimizer_(optimizer), graph_(std::make_unique<cuda::CudaGraph>(device)) {
  DCAE_CHECK(static_cast<bool>(step_), "GraphedTrainStep: no step function");
}

GraphedTrainStep::~GraphedTrainStep() = default;

void GraphedTrainStep::capture() { graph_->capture(step_); }

void GraphedTrainStep::replay() {
  DCAE_CHECK(graph_->captured(), "GraphedTrainStep::replay: the step was not captured (call capture first)");
  if (optimizer_ != nullptr) optimizer_->stage_step_scalars();
  graph_->replay();
}

bool GraphedTrainStep::captured() const { return graph_->captured(); }

}  // namespace dcae::trainer
