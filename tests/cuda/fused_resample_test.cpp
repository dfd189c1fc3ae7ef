// The fused up/down resampling blocks (ops::pixel_shuffle_with_shortcut, ops::pixel_unshuffle_with_shortcut):
// without autograd on the GPU, one kernel equal bit for bit to the unfused GPU ops and close to the CPU ones; with
// autograd, the differentiable composition.
#include <gtest/gtest.h>

#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/fused.h"
#include "ops/spatial.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::gpu;
using testing::random_tensor;

class CudaFusedResample : public testing::CudaTest {};

TEST_F(CudaFusedResample, UpBlockShortcutEqualsTheUnfusedOps) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t x_channels : {8, 12, 24}) {  // 24 / Cx = 3, 2, 1 repeats
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " Cx " + std::to_string(x_channels));
      const Tensor y = random_tensor({2, 3, 5, 24}, 1, dtype), x = random_tensor({2, 3, 5, x_channels}, 2, dtype);
      const Tensor yg = y.to(gpu()), xg = x.to(gpu());
      autograd::NoGradGuard no_grad;
      const Tensor fused = ops::pixel_shuffle_with_shortcut(yg, xg, 6, 2).to(Device::cpu());
      EXPECT_EQ(fused.shape(), (Shape{2, 6, 10, 6}));
      const Tensor unfused_gpu = ops::add(ops::pixel_shuffle(yg, 2), ops::upsample_shortcut(xg, 6, 2));
      EXPECT_TRUE(all_close(fused, unfused_gpu.to(Device::cpu()), 0, 0));
      EXPECT_TRUE(all_close(fused, ops::add(ops::pixel_shuffle(y, 2), ops::upsample_shortcut(x, 6, 2)), 1e-6, 1e-5));
    }
  }
}

TEST_F(CudaFusedResample, DownBlockShortcutEqualsTheUnfusedOps) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t x_channels : {4, 8, 2}) {  // unshuffled 16, 32, 8 channels averaged into 8
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " Cx " + std::to_string(x_channels));
      const Tensor y = random_tensor({2, 6, 10, 2}, 3, dtype), x = random_tensor({2, 6, 10, x_channels}, 4, dtype);
      const Tensor yg = y.to(gpu()), xg = x.to(gpu());
      autograd::NoGradGuard no_grad;
      const Tensor fused = ops::pixel_unshuffle_with_shortcut(yg, xg, 8, 2).to(Device::cpu());
      EXPECT_EQ(fused.shape(), (Shape{2, 3, 5, 8}));
      const Tensor unfused_gpu = ops::add(ops::pixel_unshuffle(yg, 2), ops::downsample_shortcut(xg, 8, 2));
      EXPECT_TRUE(all_close(fused, unfused_gpu.to(Device::cpu()), 0, 0));
      const double tol = dtype == DType::f32 ? 1e-5 : 1e-2;
      EXPECT_TRUE(all_close(fused, ops::add(ops::pixel_unshuffle(y, 2), ops::downsample_shortcut(x, 8, 2)), tol, tol));
    }
  }
}

TEST_F(CudaFusedResample, WithAutogradTheyAreTheComposition) {
  const Tensor y = random_tensor({1, 4, 4, 8}, 5, DType::f32).to(gpu()).set_requires_grad(true);
  const Tensor x = random_tensor({1, 4, 4, 4}, 6, DType::f32).to(gpu());
  const Tensor up = ops::pixel_shuffle_with_shortcut(y, x, 2, 2);
  EXPECT_TRUE(up.requires_grad());
  autograd::backward(ops::sum(up));
  EXPECT_TRUE(y.grad().defined());
  testing::expect_error([&] {
    autograd::NoGradGuard no_grad;
    ops::pixel_shuffle_with_shortcut(y, x, 3, 2);
  }, "pixel_shuffle_add_shortcut");
}

}  // namespace
}  // namespace dcae
