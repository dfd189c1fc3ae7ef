// max_pool2d on the GPU against the CPU kernels: pooled values and argmax exactly, NaN handling, the gradient
// (overlapping windows included) and the op's autograd.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ops/cpu/pool.h"
#include "ops/dispatch.h"
#include "ops/pool.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::gpu_equals_cpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;
using testing::tolerance_for;

class CudaPool : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};
// (kernel, stride): the VGG/discriminator 2/2, overlapping 3/2 and 2/1, and 3/3 leaving a remainder.
constexpr std::pair<int64_t, int64_t> kWindows[] = {{2, 2}, {3, 2}, {2, 1}, {3, 3}};

TEST_F(CudaPool, ForwardValuesAndArgmaxEqualCpu) {
  uint64_t seed = 10;
  for (DType dtype : kFloatDtypes)
    for (const auto& [kernel, stride] : kWindows) {
      const Tensor x = random_tensor({2, 7, 8, 5}, ++seed, dtype);
      Tensor argmax_gpu, argmax_cpu;
      const Tensor out = DCAE_KERNEL(gpu(), max_pool2d_forward, x.to(gpu()), kernel, stride, argmax_gpu);
      EXPECT_TRUE(gpu_equals_cpu(out, ops::cpu::max_pool2d_forward(x, kernel, stride, argmax_cpu)))
          << dtype << " k " << kernel << " s " << stride;
      EXPECT_TRUE(gpu_equals_cpu(argmax_gpu, argmax_cpu)) << dtype << " k " << kernel << " s " << stride;
    }
}

TEST_F(CudaPool, NaNFollowsTheCpu) {
  // A NaN first in its window is kept (nothing compares greater); a NaN later in a window is passed over.
  std::vector<double> values(1 * 4 * 4 * 2);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>((i * 7) % 11) - 5.0;
  values[0] = std::numeric_limits<double>::quiet_NaN();                 // (0, 0) channel 0: first of window 0
  values[(1 * 4 + 1) * 2 + 1] = std::numeric_limits<double>::quiet_NaN();  // (1, 1) channel 1: last of window 0
  const Tensor x = from_doubles(values, {1, 4, 4, 2}, DType::f32);
  Tensor argmax_gpu, argmax_cpu;
  const Tensor out = DCAE_KERNEL(gpu(), max_pool2d_forward, x.to(gpu()), 2, 2, argmax_gpu).to(Device::cpu());
  const Tensor expected = ops::cpu::max_pool2d_forward(x, 2, 2, argmax_cpu);
  EXPECT_TRUE(gpu_equals_cpu(argmax_gpu, argmax_cpu));
  const auto got = out.to_vector<double>(), want = expected.to_vector<double>();
  ASSERT_EQ(got.size(), want.size());
  ASSERT_TRUE(std::isnan(want[0]));
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(std::isnan(want[i]) ? std::isnan(got[i]) : got[i] == want[i]) << i << ": " << got[i] << " vs " << want[i];
}

TEST_F(CudaPool, BackwardMatchesCpu) {
  uint64_t seed = 100;
  for (DType dtype : kFloatDtypes)
    for (const auto& [kernel, stride] : kWindows) {
      const Tensor x = random_tensor({2, 7, 8, 5}, ++seed, dtype);
      Tensor argmax;
      const Tensor out = ops::cpu::max_pool2d_forward(x, kernel, stride, argmax);
      const Tensor grad = random_tensor(out.shape(), ++seed, dtype);
      // Overlapping windows add in another order than the CPU: one rounding step apart at most.
      EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), max_pool2d_backward, grad.to(gpu()), argmax.to(gpu()), x.shape()),
                                  ops::cpu::max_pool2d_backward(grad, argmax, x.shape()), tolerance_for(dtype)))
          << dtype << " k " << kernel << " s " << stride;
    }
}

TEST_F(CudaPool, GradientThroughAutograd) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = random_tensor({2, 9, 6, 4}, 200, dtype);
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::max_pool2d(in[0], 3, 2); }, {x}, {true},
                                         tolerance_for(dtype)))
        << dtype;
  }
  // A non-contiguous input is packed first.
  const Tensor nchw = random_tensor({2, 4, 6, 6}, 201, DType::f32);
  EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::max_pool2d(in[0].permute({0, 2, 3, 1}), 2, 2); },
                                       {nchw}, {0, 0}));
}

TEST_F(CudaPool, EmptyBatchAndErrors) {
  Tensor argmax;
  const Tensor out = DCAE_KERNEL(gpu(), max_pool2d_forward, random_tensor({0, 4, 4, 3}, 1, DType::f32).to(gpu()), 2, 2,
                                 argmax);
  EXPECT_EQ(out.shape(), (Shape{0, 2, 2, 3}));
  testing::expect_error([] { ops::max_pool2d(random_tensor({1, 2, 4, 3}, 2, DType::f32).to(gpu()), 3, 1); },
                        {"max_pool2d", "[1, 2, 4, 3]"});
}

}  // namespace
}  // namespace dcae
