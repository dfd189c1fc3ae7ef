// Binary, where and unary kernels on the GPU against the CPU kernels, forward and backward. Kernels are called
// through DCAE_KERNEL with a CUDA device (that is ops::cuda::<kernel>), so the file also compiles without CUDA.
#include <gtest/gtest.h>

#include "ops/cpu/elementwise.h"
#include "ops/cpu/unary.h"
#include "ops/elementwise.h"
#include "ops/unary.h"
#include "ops/view.h"
#include "ops/dispatch.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::gpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;
using testing::random_uniform;
using testing::random_values;
using testing::tolerance_for;

class CudaElementwise : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};
constexpr ops::BinaryOp kBinaryOps[] = {ops::BinaryOp::add, ops::BinaryOp::sub, ops::BinaryOp::mul,
                                        ops::BinaryOp::div, ops::BinaryOp::maximum, ops::BinaryOp::minimum,
                                        ops::BinaryOp::ge, ops::BinaryOp::gt, ops::BinaryOp::le,
                                        ops::BinaryOp::lt, ops::BinaryOp::eq};

// Operand shapes: same shape (vector path, odd length for the tail), broadcasts, NHWC bias, scalar.
const std::vector<std::pair<Shape, Shape>> kShapes = {
    {{1031}, {1031}},        {{2, 3, 4}, {4}},   {{2, 1, 4}, {3, 1}},        {{5}, {}},
    {{1, 3}, {2, 1}},        {{2, 5, 7, 16}, {16}}, {{2, 5, 7, 16}, {2, 1, 1, 16}}, {{64, 33}, {64, 33}}};

TEST_F(CudaElementwise, BinaryMatchesCpuForEveryOpDtypeAndBroadcast) {
  for (DType dtype : kFloatDtypes) {
    for (const auto& [sa, sb] : kShapes) {
      const Tensor a = random_tensor(sa, 1, dtype);
      // Keep b away from 0 for div, and make some elements equal to a's for the comparisons.
      Tensor b = ops::add(random_tensor(sb, 2, dtype), 0.25);
      if (sa == sb) b = ops::where(ops::greater(random_tensor(sb, 3, dtype), zeros({}, dtype)), a, b);
      for (ops::BinaryOp op : kBinaryOps) {
        EXPECT_TRUE(testing::forward_matches([op](const auto& in) { return ops::binary(op, in[0], in[1]); }, {a, b},
                                             tolerance_for(dtype)))
            << static_cast<int>(op) << " " << dtype << " " << shape_str(sa) << " " << shape_str(sb);
      }
    }
  }
}

TEST_F(CudaElementwise, BinaryOnIntegers) {
  for (DType dtype : {DType::i64, DType::i32, DType::u8}) {
    const Tensor a = random_values({3, 37}, 4, dtype), b = random_values({37}, 5, dtype);
    for (ops::BinaryOp op : {ops::BinaryOp::add, ops::BinaryOp::mul, ops::BinaryOp::maximum, ops::BinaryOp::div,
                             ops::BinaryOp::eq, ops::BinaryOp::lt}) {
      EXPECT_TRUE(testing::forward_matches([op](const auto& in) { return ops::binary(op, in[0], in[1]); }, {a, b},
                                           {0, 0}))
          << static_cast<int>(op) << " " << dtype;
    }
  }
  EXPECT_THROW(DCAE_KERNEL(gpu(), binary_forward, ops::BinaryOp::add, zeros({2}, DType::boolean, gpu()),
                                         zeros({2}, DType::boolean, gpu())),
               Error);
}

TEST_F(CudaElementwise, BinaryOnMisalignedAndStridedOperands) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor base = random_tensor({2051}, 6, dtype), other = random_tensor({4100}, 7, dtype);
    // Offset by one element: no 16-byte alignment, so the scalar path runs.
    const Tensor a = base.narrow(0, 1, 2050), b = other.slice(0, 0, 4100, 2);
    const Tensor c = other.narrow(0, 3, 2050);
    EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::mul(in[0], in[1]); }, {a, c},
                                         tolerance_for(dtype)));
    EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::sub(in[0], in[1]); }, {a, b},
                                         tolerance_for(dtype)));
    const Tensor m = random_tensor({40, 30}, 8, dtype);
    EXPECT_TRUE(testing::forward_matches(
        [](const auto& in) { return ops::div(in[0].transpose(0, 1), ops::add(in[1].transpose(0, 1), 4.0)); }, {m, m},
        tolerance_for(dtype)));
  }
}

TEST_F(CudaElementwise, BinaryGradientsUnbroadcastOnTheGpu) {
  for (auto op : {ops::BinaryOp::add, ops::BinaryOp::sub, ops::BinaryOp::mul, ops::BinaryOp::div,
                  ops::BinaryOp::maximum, ops::BinaryOp::minimum}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor a = random_tensor({2, 5, 7, 16}, 9, dtype);
      const Tensor b = ops::add(random_tensor({16}, 10, dtype), 3.0);
      EXPECT_TRUE(testing::gradients_match([op](const auto& in) { return ops::binary(op, in[0], in[1]); }, {a, b},
                                           {true, true}, tolerance_for(dtype)))
          << static_cast<int>(op) << " " << dtype;
    }
  }
}

TEST_F(CudaElementwise, WhereSelectsEveryDtypeWithBroadcast) {
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i64, DType::u8}) {
    const Tensor cond = ops::greater(random_tensor({4, 1, 6}, 11), zeros({}, DType::f64));
    const Tensor a = random_values({5, 6}, 12, dtype), b = random_values({4, 5, 1}, 13, dtype);
    for (DType cond_dtype : {DType::u8, DType::f32, DType::boolean}) {
      EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::where(in[0], in[1], in[2]); },
                                           {cond.to(cond_dtype), a, b}, {0, 0}))
          << dtype << " cond " << cond_dtype;
    }
  }
  const Tensor cond = ops::less(random_tensor({3, 8}, 14), zeros({}, DType::f64));
  EXPECT_TRUE(testing::gradients_match([&](const auto& in) { return ops::where(in[0], in[1], in[2]); },
                                       {cond, random_tensor({3, 8}, 15, DType::f32), random_tensor({8}, 16, DType::f32)},
                                       {false, true, true}, tolerance_for(DType::f32)));
}

struct UnaryCase {
  ops::UnaryOp op;
  double low, high;  // input range
  double p0 = 0, p1 = 0;
};

const std::vector<UnaryCase> kUnaryCases = {
    {ops::UnaryOp::relu, -2, 2},         {ops::UnaryOp::silu, -4, 4},
    {ops::UnaryOp::gelu_tanh, -4, 4},    {ops::UnaryOp::sigmoid, -5, 5},
    {ops::UnaryOp::tanh, -3, 3},         {ops::UnaryOp::exp, -2, 2},
    {ops::UnaryOp::log, 0.2, 3},         {ops::UnaryOp::sqrt, 0.2, 3},
    {ops::UnaryOp::rsqrt, 0.2, 3},       {ops::UnaryOp::abs, -2, 2},
    {ops::UnaryOp::square, -2, 2},       {ops::UnaryOp::neg, -2, 2},
    {ops::UnaryOp::pow, 0.2, 3, 2.5},    {ops::UnaryOp::add_scalar, -2, 2, 1.5},
    {ops::UnaryOp::mul_scalar, -2, 2, -0.75}, {ops::UnaryOp::rsub_scalar, -2, 2, 0.5},
    {ops::UnaryOp::clamp, -2, 2, -0.5, 0.7},
    {ops::UnaryOp::gelu_erf, -4, 4},       {ops::UnaryOp::leaky_relu, -2, 2, 0.2},
    {ops::UnaryOp::sin, -4, 4},            {ops::UnaryOp::cos, -4, 4},
};

TEST_F(CudaElementwise, UnaryForwardAndBackwardKernelsMatchCpu) {
  for (const UnaryCase& c : kUnaryCases) {
    for (DType dtype : kFloatDtypes) {
      for (const Shape& shape : {Shape{1031}, Shape{4, 6, 5, 8}}) {
        const Tensor x = random_uniform(shape, 17, c.low, c.high, dtype);
        const Tensor g = random_tensor(shape, 18, dtype);
        const Tensor x_gpu = x.to(gpu()), g_gpu = g.to(gpu());
        EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), unary_forward, c.op, x_gpu, c.p0, c.p1),
                                    ops::cpu::unary_forward(c.op, x, c.p0, c.p1), tolerance_for(dtype)))
            << ops::unary_name(c.op) << " " << dtype << " " << shape_str(shape);
        EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), unary_backward, c.op, g_gpu, x_gpu, c.p0, c.p1),
                                    ops::cpu::unary_backward(c.op, g, x, c.p0, c.p1), tolerance_for(dtype)))
            << ops::unary_name(c.op) << " backward " << dtype << " " << shape_str(shape);
      }
    }
  }
}

TEST_F(CudaElementwise, UnaryOnStridedInputsMixedGradDtypesAndThroughAutograd) {
  const Tensor x = random_uniform({33, 20}, 19, 0.2, 3.0, DType::f32);
  for (const UnaryCase& c : kUnaryCases) {
    EXPECT_TRUE(testing::forward_matches([&](const auto& in) { return ops::unary(c.op, in[0].transpose(0, 1), c.p0, c.p1); },
                                         {x}, tolerance_for(DType::f32)))
        << ops::unary_name(c.op);
    EXPECT_TRUE(testing::gradients_match([&](const auto& in) { return ops::unary(c.op, in[0], c.p0, c.p1); }, {x},
                                         {true}, tolerance_for(DType::f32)))
        << ops::unary_name(c.op);
  }
  // A bf16 input with an f32 gradient computes in f32 and returns f32, as on the CPU.
  const Tensor xb = x.to(DType::bf16), g = random_tensor({33, 20}, 20, DType::f32);
  EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), unary_backward, ops::UnaryOp::silu, g.to(gpu()), xb.to(gpu()), 0, 0),
                              ops::cpu::unary_backward(ops::UnaryOp::silu, g, xb, 0, 0), tolerance_for(DType::f32)));
  // An expanded gradient (as sum's backward produces) is read correctly.
  const Tensor g_row = random_tensor({20}, 21, DType::f32);
  EXPECT_TRUE(gpu_matches_cpu(
      DCAE_KERNEL(gpu(), unary_backward, ops::UnaryOp::tanh, g_row.to(gpu()).expand({33, 20}), x.to(gpu()), 0, 0),
      ops::cpu::unary_backward(ops::UnaryOp::tanh, g_row.expand({33, 20}), x, 0, 0)));
  EXPECT_THROW(ops::relu(zeros({2}, DType::i64, gpu())), Error);
}

TEST_F(CudaElementwise, ReducedPrecisionStaysCloseToF32) {
  const Tensor a = random_tensor({2, 8, 8, 32}, 22, DType::f32), b = random_tensor({32}, 23, DType::f32);
  const Tensor reference = ops::silu(ops::mul(ops::add(a, b), 0.5));
  for (DType low : {DType::bf16, DType::f16}) {
    const Tensor out = ops::silu(ops::mul(ops::add(a.to(low).to(gpu()), b.to(low).to(gpu())), 0.5));
    EXPECT_EQ(out.dtype(), low);
    EXPECT_TRUE(all_close(out.to(Device::cpu()).to(DType::f32), reference, 1e-2, 1e-2)) << low;
  }
}

}  // namespace
}  // namespace dcae
