// The conv autotuner's knob search (ops/cuda/conv2d.cpp, cudnn_conv_knob_neighbours in ops/cuda/cudnn_conv.h):
// every one-knob neighbour of cuDNN's first input-gradient and weight-gradient plan runs the same engine with
// other knob settings (distinct plans) and computes what the CPU computes (outputs start as NaN: the allocator
// poisons them); and a problem large enough for the search (>= 2^34 multiply-adds) gives, autotuned, what the
// heuristic's first plan gives with autotuning off.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "ops/conv2d.h"
#include "ops/cpu/conv2d.h"
#include "tests/cuda/accumulation_check.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/conv2d.h"
#include "ops/cuda/cudnn_conv.h"
#include "ops/cuda/math_mode.h"
#endif

namespace dcae {
namespace {

using testing::gpu;
using testing::random_tensor;
using testing::sums_match;

class CudaConvKnobSearch : public testing::CudaTest {};

TEST_F(CudaConvKnobSearch, NeighboursRunTheSameEngineAndMatchCpu) {
#ifdef DCAE_WITH_CUDA
  using ops::cuda::ConvDirection;
  const int64_t n = 2, hw = 16, c = 64;
  const ops::cuda::ConvGeometry g{n, hw, hw, c, c, 3, 3, 1, 1, 1, hw, hw};
  const ops::Conv2dParams params{1, 1, 1};
  const DType dtype = DType::bf16;
  const Tensor x = random_tensor({n, hw, hw, c}, 1, dtype), grad = random_tensor({n, hw, hw, c}, 2, dtype);
  const Tensor w_krsc = random_tensor({c, 3, 3, c}, 3, dtype);
  const Tensor w = w_krsc.permute({0, 3, 1, 2}).contiguous();  // PyTorch layout, for the CPU
  int checked = 0;
  for (const ConvDirection direction : {ConvDirection::backward_data, ConvDirection::backward_filter}) {
    const bool data = direction == ConvDirection::backward_data;
    const auto first = ops::cuda::cudnn_conv_plans(direction, g, dtype, {}, 0, 1);
    ASSERT_FALSE(first.empty()) << "cuDNN has no plan for the " << (data ? "input" : "weight") << " gradient";
    const auto neighbours = ops::cuda::cudnn_conv_knob_neighbours(*first[0], dtype, 0, 48);
    std::set<std::string> seen = {first[0]->description()};
    const Tensor want = data ? ops::cpu::conv2d_backward_input(grad, w, x.shape(), params)
                             : ops::cpu::conv2d_backward_weight(grad, x, w.shape(), params);
    for (const auto& plan : neighbours) {
      EXPECT_EQ(plan->engine_id(), first[0]->engine_id()) << plan->description();
      EXPECT_TRUE(seen.insert(plan->description()).second) << "plan proposed twice: " << plan->description();
      const Tensor x_gpu = data ? empty(x.shape(), dtype, gpu()) : x.to(gpu());
      const Tensor w_gpu = data ? w_krsc.to(gpu()) : empty(w_krsc.shape(), dtype, gpu());
      const Tensor grad_gpu = grad.to(gpu());
      Tensor workspace;
      if (plan->workspace_bytes() > 0)
        workspace = empty({static_cast<int64_t>(plan->workspace_bytes())}, DType::u8, gpu());
      plan->run(0, x_gpu.raw_data(), w_gpu.raw_data(), grad_gpu.raw_data(),
                workspace.defined() ? workspace.raw_data() : nullptr);
      // The weight gradient comes out KRSC: back to PyTorch's layout for the comparison.
      const Tensor got = data ? x_gpu : w_gpu.permute({0, 3, 1, 2}).contiguous();
      EXPECT_TRUE(sums_match(got, want)) << plan->description();
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "the engines cuDNN picked here have no knobs to move";
#endif
}

TEST_F(CudaConvKnobSearch, SearchedChoiceMatchesTheHeuristicsFirstPlan) {
#ifdef DCAE_WITH_CUDA
  // 8 * 64 * 64 * 256 * 256 * 9 = 1.9e10 multiply-adds: above the search threshold (2^34).
  const Shape x_shape = {8, 64, 64, 256}, w_shape = {256, 256, 3, 3};
  const ops::Conv2dParams params{1, 1, 1};
  const DType dtype = DType::bf16;
  const Tensor x = random_tensor(x_shape, 4, dtype).to(gpu()), w = random_tensor(w_shape, 5, dtype).to(gpu());
  const Tensor grad = random_tensor({8, 64, 64, 256}, 6, dtype).to(gpu());
  const bool previous = ops::cuda::conv_autotune();
  ops::cuda::set_conv_autotune(false);
  const Tensor dx_first = ops::cuda::conv2d_backward_input(grad, w, x_shape, params).to(Device::cpu());
  const Tensor dw_first = ops::cuda::conv2d_backward_weight(grad, x, w_shape, params).to(Device::cpu());
  ops::cuda::set_conv_autotune(true);
  const Tensor dx = ops::cuda::conv2d_backward_input(grad, w, x_shape, params);
  const Tensor dw = ops::cuda::conv2d_backward_weight(grad, x, w_shape, params);
  ops::cuda::set_conv_autotune(previous);
  // Both are fp32 sums rounded to bf16 once, in different orders: compared like GPU against CPU.
  EXPECT_TRUE(sums_match(dx, dx_first));
  EXPECT_TRUE(sums_match(dw, dw_first));
#endif
}

}  // namespace
}  // namespace dcae
