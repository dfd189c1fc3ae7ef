// Encode or decode of an AutoencoderDC through CUDA graphs, one graph per input shape (core/tensor/cuda/
// cuda_graph.h): the first call with a shape runs eagerly (the warm-up that picks algorithms and fills plan
// caches), the second captures the call with a static input, and every later call copies its input into the static
// input and replays - one launch instead of hundreds, no allocation. Inference only (no autograd) and the model's
// weights must stay where they are (updated in place is fine: replays read them). CPU inputs, and builds without
// CUDA, run eagerly.
#pragma once
#include <map>
#include <memory>
#include <tuple>

#include "nn/dcae/model.h"

namespace dcae::cuda {
class CudaGraph;
}

namespace dcae::nn::dcae_model {

class GraphedRunner {
 public:
  enum class Direction { encode, decode };
  // With use_graphs false every call runs eagerly (one code path for callers that make graphs optional).
  GraphedRunner(AutoencoderDC& model, Direction direction, bool use_graphs = true);
  ~GraphedRunner();
  GraphedRunner(const GraphedRunner&) = delete;
  GraphedRunner& operator=(const GraphedRunner&) = delete;

  // model.encode(input) or model.decode(input); the result belongs to the caller (later calls do not touch it).
  Tensor operator()(const Tensor& input);
  AutoencoderDC& model() { return model_; }
  // Graphs captured so far (one per input shape, dtype and device seen at least twice).
  int64_t graphs() const { return static_cast<int64_t>(graphs_.size()); }

 private:
  using Key = std::tuple<Shape, DType, int>;  // shape, dtype, CUDA device
  struct Captured;
  Tensor eager(const Tensor& input);

  AutoencoderDC& model_;
  Direction direction_;
  bool use_graphs_;
  std::map<Key, int> seen_;  // calls per key before its capture
  std::map<Key, std::unique_ptr<Captured>> graphs_;
};

}  // namespace dcae::nn::dcae_model
