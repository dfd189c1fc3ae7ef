// The input gradient of stride-1 convolutions computed as a forward convolution of dy with the transposed,
// spatially flipped filter (ops::cuda::InputGradientPath): the filter transform bit for bit, the path forced on
// against the CPU's input gradient in f32, bf16 and f16 (outputs start as NaN: the allocator poisons them), and
// the problems where it does not apply (stride 2, groups, kh != kw, padding >= kernel, 1x1 GEMMs, the direct
// kernels), which must fall back to the input-gradient engines. Conv2dParams has no dilation, so none is tested.
#include <gtest/gtest.h>

#include <string>

#include "ops/conv2d.h"
#include "ops/cpu/conv2d.h"
#include "ops/dispatch.h"
#include "tests/cuda/accumulation_check.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/conv2d.h"
#include "ops/cuda/conv2d_flip.h"
#endif

namespace dcae {
namespace {

using testing::gpu;
using testing::random_tensor;
using testing::sums_match;

class CudaConv2dInputGradient : public testing::CudaTest {};

struct GradCase {
  const char* name;
  Shape x, weight;
  ops::Conv2dParams params;
};

#ifdef DCAE_WITH_CUDA
struct PathScope {
  explicit PathScope(ops::cuda::InputGradientPath path) : previous(ops::cuda::set_input_gradient_path(path)) {}
  ~PathScope() { ops::cuda::set_input_gradient_path(previous); }
  ops::cuda::InputGradientPath previous;
};

// The CUDA input gradient of one case against the CPU's; `flipped` says which path must have run.
::testing::AssertionResult input_gradient_matches(const GradCase& c, DType dtype, uint64_t seed, bool flipped) {
  const Shape y_shape = {c.x[0], ops::conv2d_output_size(c.x[1], c.weight[2], c.params.stride, c.params.padding),
                         ops::conv2d_output_size(c.x[2], c.weight[3], c.params.stride, c.params.padding), c.weight[0]};
  const Tensor w = random_tensor(c.weight, seed, dtype), grad = random_tensor(y_shape, seed + 1, dtype);
  const Tensor dx = ops::cuda::conv2d_backward_input(grad.to(gpu()), w.to(gpu()), c.x, c.params);
  const std::string ran = ops::cuda::last_conv_algorithm();
  if (flipped != (ran.rfind("flipped forward", 0) == 0))
    return ::testing::AssertionFailure() << "expected " << (flipped ? "the flipped forward" : "the fallback")
                                         << ", ran " << ran;
  auto result = sums_match(dx, ops::cpu::conv2d_backward_input(grad, w, c.x, c.params));
  if (!result) result << " (ran " << ran << ")";
  return result;
}
#endif

TEST_F(CudaConv2dInputGradient, FilterTransformIsTheTransposedFlip) {
#ifdef DCAE_WITH_CUDA
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    const int64_t o = 5, i = 3, kh = 3, kw = 2;
    const Tensor w = random_tensor({o, i, kh, kw}, 11, dtype);
    // out[ii, r, s, oo] = w[oo, ii, kh-1-r, kw-1-s], written out on the CPU element by element.
    const std::vector<double> values = w.to_vector<double>();
    std::vector<double> expected(values.size());
    for (int64_t oo = 0; oo < o; ++oo)
      for (int64_t ii = 0; ii < i; ++ii)
        for (int64_t r = 0; r < kh; ++r)
          for (int64_t s = 0; s < kw; ++s)
            expected[((ii * kh + r) * kw + s) * o + oo] = values[((oo * i + ii) * kh + (kh - 1 - r)) * kw + (kw - 1 - s)];
    const Tensor want = from_vector(expected, {i, kh, kw, o}).to(dtype);
    EXPECT_TRUE(testing::gpu_equals_cpu(ops::cuda::flipped_transposed_filter(w.to(gpu())), want)) << dtype;
  }
#endif
}

TEST_F(CudaConv2dInputGradient, FlippedForwardMatchesCpu) {
#ifdef DCAE_WITH_CUDA
  PathScope scope(ops::cuda::InputGradientPath::flipped_forward);
  const std::vector<GradCase> cases = {
      {"3x3 same", {2, 9, 7, 16}, {24, 16, 3, 3}, {1, 1, 1}},
      {"3x3 odd sizes and channels", {3, 11, 13, 5}, {7, 5, 3, 3}, {1, 1, 1}},
      {"3x3 valid (padding 2 in the forward)", {1, 6, 5, 8}, {8, 8, 3, 3}, {1, 0, 1}},
      {"3x3 padding 2 (padding 0 in the forward)", {1, 5, 6, 4}, {4, 4, 3, 3}, {1, 2, 1}},
      {"5x5 same", {1, 10, 9, 8}, {12, 8, 5, 5}, {1, 2, 1}},
      {"RGB input (3 channels)", {2, 12, 10, 3}, {16, 3, 3, 3}, {1, 1, 1}},
  };
  uint64_t seed = 100;
  for (const GradCase& c : cases)
    for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
      seed += 10;
      EXPECT_TRUE(input_gradient_matches(c, dtype, seed, true)) << c.name << " " << dtype;
    }
#endif
}

TEST_F(CudaConv2dInputGradient, FallsBackWhereItDoesNotApply) {
#ifdef DCAE_WITH_CUDA
  PathScope scope(ops::cuda::InputGradientPath::flipped_forward);
  const std::vector<GradCase> cases = {
      {"3x3 stride 2", {2, 9, 11, 8}, {16, 8, 3, 3}, {2, 1, 1}},
      {"grouped 3x3", {2, 6, 6, 16}, {32, 4, 3, 3}, {1, 1, 4}},
      {"depthwise 3x3", {2, 8, 8, 32}, {32, 1, 3, 3}, {1, 1, 32}},
      {"1x3, kh != kw", {2, 5, 6, 4}, {8, 4, 1, 3}, {1, 0, 1}},
      {"3x3 padding 3 (negative in the forward)", {1, 5, 5, 4}, {4, 4, 3, 3}, {1, 3, 1}},
  };
  uint64_t seed = 500;
  for (const GradCase& c : cases)
    for (DType dtype : {DType::f32, DType::bf16}) {
      seed += 10;
      EXPECT_TRUE(input_gradient_matches(c, dtype, seed, false)) << c.name << " " << dtype;
    }
  // 1x1 convolutions are GEMMs, and the direct kernels keep their own input gradient.
  const GradCase pointwise{"1x1 (GEMM)", {2, 5, 6, 32}, {48, 32, 1, 1}, {1, 0, 1}};
  EXPECT_TRUE(input_gradient_matches(pointwise, DType::bf16, 900, false));
  EXPECT_EQ(std::string(ops::cuda::last_conv_algorithm()), "gemm");
  const ops::cuda::ConvBackend previous = ops::cuda::set_conv_backend(ops::cuda::ConvBackend::direct_only);
  EXPECT_TRUE(input_gradient_matches({"3x3 same, direct", {2, 9, 7, 16}, {24, 16, 3, 3}, {1, 1, 1}}, DType::f32, 910,
                                     false));
  ops::cuda::set_conv_backend(previous);
#endif
}

TEST_F(CudaConv2dInputGradient, ForcedDgradAndTimedChoiceMatchCpu) {
#ifdef DCAE_WITH_CUDA
  const GradCase c{"3x3 same", {2, 16, 16, 32}, {32, 32, 3, 3}, {1, 1, 1}};
  {
    PathScope scope(ops::cuda::InputGradientPath::dgrad);
    EXPECT_TRUE(input_gradient_matches(c, DType::bf16, 1000, false));
  }
  // Automatic: whichever path won the timing, twice (the second from the cache) and both right.
  for (uint64_t seed : {1010, 1020}) {
    const Shape y_shape = {2, 16, 16, 32};
    const Tensor w = random_tensor(c.weight, seed, DType::bf16), grad = random_tensor(y_shape, seed + 1, DType::bf16);
    EXPECT_TRUE(sums_match(ops::cuda::conv2d_backward_input(grad.to(gpu()), w.to(gpu()), c.x, c.params),
                           ops::cpu::conv2d_backward_input(grad, w, c.x, c.params)))
        << ops::cuda::last_conv_algorithm();
  }
#endif
}

}  // namespace
}  // namespace dcae
