// silu_gate on the GPU against the CPU kernels: the 16-byte pack path and the scalar path, every float dtype, and
// gradients through autograd.
#include <gtest/gtest.h>

#include "ops/cpu/glu.h"
#include "ops/dispatch.h"
#include "ops/glu.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;
using testing::tolerance_for;

class CudaGlu : public testing::CudaTest {};

TEST_F(CudaGlu, ForwardAndBackwardMatchCpu) {
  // Half-widths 64 (16-byte packs in every dtype), 12 (packs for f32 and f64 only) and 3 (scalar).
  for (const Shape& shape : {Shape{2, 5, 7, 128}, Shape{3, 4, 24}, Shape{9, 6}}) {
    for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
      const Tensor x = random_tensor(shape, 1, dtype, 2.0);
      EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), silu_gate_forward, x.to(gpu())), ops::cpu::silu_gate_forward(x)))
          << shape_str(shape) << " " << dtype;
      Shape half = shape;
      half.back() /= 2;
      const Tensor g = random_tensor(half, 2, dtype);
      EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), silu_gate_backward, g.to(gpu()), x.to(gpu())),
                                  ops::cpu::silu_gate_backward(g, x)))
          << shape_str(shape) << " backward " << dtype;
    }
  }
  for (DType dtype : {DType::f32, DType::bf16}) {
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::silu_gate(in[0]); },
                                         {random_tensor({2, 3, 3, 64}, 3, dtype)}, {true}, tolerance_for(dtype)))
        << dtype;
  }
}

}  // namespace
}  // namespace dcae
