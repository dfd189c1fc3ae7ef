// conv2d + bias + relu/silu (ops::conv2d_activation): the fused cuDNN epilogue plans, run directly, equal the CPU
// composition, and the op (whichever path its first-use timing picks) does too; with autograd it is the composition.
#include <gtest/gtest.h>

#include <cstdio>

#include "ops/conv2d.h"
#include "ops/fused.h"
#include "ops/unary.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "core/autograd/grad_mode.h"
#include "ops/cuda/conv2d.h"
#include "ops/cuda/cudnn_conv.h"
#endif

namespace dcae {
namespace {

using testing::all_close;
using testing::gpu;
using testing::random_tensor;

class CudaFusedConvActivation : public testing::CudaTest {};

#ifdef DCAE_WITH_CUDA
struct Case {
  Shape x, w;
};
const Case kCases[] = {{{2, 9, 7, 16}, {24, 16, 3, 3}}, {{2, 32, 32, 64}, {64, 64, 3, 3}}};

TEST_F(CudaFusedConvActivation, EpiloguePlansEqualTheComposition) {
  int plans_checked = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Case& c : kCases) {
      for (ops::UnaryOp act : {ops::UnaryOp::relu, ops::UnaryOp::silu}) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + shape_str(c.x) + (act == ops::UnaryOp::relu ? " relu" : " silu"));
        const Tensor x = random_tensor(c.x, 1, dtype), w = random_tensor(c.w, 2, dtype, 0.2);
        const Tensor b = random_tensor({c.w[0]}, 3, dtype);
        const Tensor expected = ops::unary(act, ops::conv2d(x, w, b, {1, 1, 1}));
        // One rounding in the fused epilogue against several in the composition: a little looser than one op's.
        const double atol = dtype == DType::f32 ? 1e-4 : 3e-2, rtol = dtype == DType::f32 ? 1e-4 : 2e-2;
        autograd::NoGradGuard no_grad;
        const Tensor xg = x.to(gpu()), wg = w.to(gpu()), bg = b.to(gpu());
        EXPECT_TRUE(all_close(ops::conv2d_activation(xg, wg, bg, {1, 1, 1}, act).to(Device::cpu()), expected, atol,
                              rtol));
        std::printf("conv2d_activation %s %s: %s\n", dtype_name(dtype), shape_str(c.x).c_str(),
                    ops::cuda::last_conv_algorithm());

        // Every fused plan cuDNN offers, run directly on KRSC weights.
        const ops::cuda::ConvGeometry g{c.x[0], c.x[1], c.x[2], c.x[3], c.w[0], 3, 3, 1, 1, 1, c.x[1], c.x[2]};
        const auto epilogue = act == ops::UnaryOp::relu ? ops::cuda::ConvEpilogue::bias_relu
                                                        : ops::cuda::ConvEpilogue::bias_silu;
        const Tensor krsc = wg.permute({0, 2, 3, 1}).contiguous();
        for (const auto& plan : ops::cuda::cudnn_conv_bias_plans(g, dtype, {}, 0, 4, epilogue)) {
          Tensor y = empty(expected.shape(), dtype, gpu());
          Tensor workspace;
          if (plan->workspace_bytes() > 0)
            workspace = empty({static_cast<int64_t>(plan->workspace_bytes())}, DType::u8, gpu());
          plan->run(0, xg.raw_data(), krsc.raw_data(), y.raw_data(),
                    workspace.defined() ? workspace.raw_data() : nullptr, bg.raw_data());
          EXPECT_TRUE(all_close(y.to(Device::cpu()), expected, atol, rtol)) << "engine " << plan->engine_id();
          ++plans_checked;
        }
      }
    }
  }
  std::printf("fused conv+bias+activation plans checked: %d\n", plans_checked);
}

TEST_F(CudaFusedConvActivation, WithAutogradItIsTheComposition) {
  const Tensor x = random_tensor({1, 6, 6, 8}, 4, DType::f32).to(gpu()).set_requires_grad(true);
  const Tensor w = random_tensor({8, 8, 3, 3}, 5, DType::f32).to(gpu());
  const Tensor b = random_tensor({8}, 6, DType::f32).to(gpu());
  const Tensor y = ops::conv2d_activation(x, w, b, {1, 1, 1}, ops::UnaryOp::silu);
  EXPECT_TRUE(y.requires_grad());
  testing::expect_error([&] { ops::conv2d_activation(x, w, b, {1, 1, 1}, ops::UnaryOp::tanh); }, "relu or silu");
}
#endif

}  // namespace
}  // namespace dcae
