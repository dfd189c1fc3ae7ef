// Sum and max on the GPU against the CPU kernels: every reduction layout (rows, columns, split and interleaved),
// ties and NaN for max, and gradients through autograd.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/cpu/reduce.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"
#include "ops/view.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::gpu_equals_cpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;
using testing::tolerance_for;

class CudaReduce : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

struct SumCase {
  Shape shape;
  std::vector<int64_t> dims;
};

TEST_F(CudaReduce, SumMatchesCpuForEveryLayout) {
  const std::vector<SumCase> cases = {
      {{2, 3, 4, 5}, {0, 1, 2, 3}}, {{2, 3, 4, 5}, {0}},    {{2, 3, 4, 5}, {3}},     {{2, 3, 4, 5}, {1, 2}},
      {{2, 3, 4, 5}, {0, 1}},       {{2, 3, 4, 5}, {2, 3}}, {{2, 3, 4, 5}, {0, 2}},  {{2, 3, 4, 5}, {1, 3}},
      {{2, 1, 4, 1}, {1, 3}},       // only size-1 dims reduced: a copy
      {{3, 1, 5}, {0, 1}},          // size-1 dims inside the run
      {{1, 1 << 20}, {1}},          // one long row: split across blocks, partials in f64
      {{8, 100000}, {1}},           // few long rows
      {{20000, 7}, {1}},            // many short rows: a warp each
      {{4096, 64}, {0}},            // columns (bias gradient), split over rows
      {{3, 100000, 5}, {1}},        // narrow columns, long reduction
      {{2, 16, 16, 64}, {0, 1, 2}}, // NHWC bias gradient
      {{2, 16, 16, 64}, {1, 2}},    // per-image channel sums
      {{7}, {0}},                   // tiny
  };
  for (const SumCase& c : cases) {
    for (DType dtype : kFloatDtypes) {
      const Tensor x = random_tensor(c.shape, 1, dtype);
      // Sums of many elements grow like sqrt(n): compare relative to that scale, not element-wise zero crossings.
      const double n = static_cast<double>(x.numel()) / std::max<double>(1.0, static_cast<double>(ops::sum(x, c.dims, true).numel()));
      testing::Tolerance tol = tolerance_for(dtype);
      tol.atol *= std::sqrt(n);
      EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), sum_forward, x.to(gpu()), c.dims), ops::cpu::sum_forward(x, c.dims), tol))
          << shape_str(c.shape) << " dims " << shape_str(c.dims) << " " << dtype;
    }
  }
}

TEST_F(CudaReduce, SumOfStridedInputsMeanVarAndGradients) {
  const Tensor x = random_tensor({6, 40, 9}, 2, DType::f32);
  EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::sum(in[0].transpose(0, 2), {1}, true); }, {x},
                                       tolerance_for(DType::f32)));
  EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::mean(in[0], {0, 2}); }, {x},
                                       tolerance_for(DType::f32)));
  EXPECT_TRUE(testing::forward_matches([](const auto& in) { return ops::var(in[0], {1}); }, {x},
                                       tolerance_for(DType::f32)));
  for (DType dtype : {DType::f32, DType::bf16}) {
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::sum(in[0], {0, 2}); }, {x.to(dtype)}, {true},
                                         tolerance_for(dtype)));
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::var(in[0], {1}, 1, true); }, {x.to(dtype)},
                                         {true}, tolerance_for(dtype)));
  }
  // Empty inputs: a sum over nothing is zero; an empty kept dim gives an empty result.
  EXPECT_TRUE(gpu_equals_cpu(ops::sum(zeros({3, 0}, DType::f32, gpu()), {1}), ops::sum(zeros({3, 0}), {1})));
  EXPECT_EQ(ops::sum(zeros({0, 4}, DType::f32, gpu()), {1}).numel(), 0);
  EXPECT_THROW(ops::sum(zeros({2}, DType::i64, gpu())), Error);
}

// Integer-valued data in a small range, so that maxima repeat (ties go to the first index).
Tensor tied_values(const Shape& shape, uint64_t seed, DType dtype) {
  std::vector<double> v = testing::random_uniform(shape, seed, -4.0, 4.0).to_vector<double>();
  for (double& e : v) e = std::floor(e);
  return from_doubles(v, shape, dtype);
}

TEST_F(CudaReduce, MaxValuesAndFirstIndicesMatchCpu) {
  const std::vector<std::pair<Shape, int64_t>> cases = {
      {{5, 7}, 1},       {{5, 7}, 0},        {{3, 4, 6}, 1},  {{1, 100000}, 1},  // one long row: a block
      {{300, 70}, 1},    {{2, 9, 9, 33}, 3}, {{64, 3}, 0},    {{1}, 0}};
  for (const auto& [shape, dim] : cases) {
    for (DType dtype : kFloatDtypes) {
      for (bool ties : {false, true}) {
        const Tensor x = ties ? tied_values(shape, 3, dtype) : random_tensor(shape, 3, dtype);
        Tensor gpu_indices, cpu_indices;
        const Tensor gpu_values = DCAE_KERNEL(gpu(), max_forward, x.to(gpu()), dim, gpu_indices);
        const Tensor cpu_values = ops::cpu::max_forward(x, dim, cpu_indices);
        EXPECT_TRUE(gpu_equals_cpu(gpu_values, cpu_values)) << shape_str(shape) << " dim " << dim << " " << dtype;
        EXPECT_TRUE(gpu_equals_cpu(gpu_indices, cpu_indices)) << shape_str(shape) << " dim " << dim << " " << dtype;
      }
    }
  }
}

TEST_F(CudaReduce, MaxLetsTheFirstNanWin) {
  for (int64_t n : {int64_t{10}, int64_t{5000}}) {  // thread-per-row and block-per-row paths
    std::vector<double> v = random_tensor({2, n}, 4).to_vector<double>();
    v[3] = NAN;
    v[n - 2] = NAN;  // row 0: first NaN at 3
    v[n + n - 1] = NAN;  // row 1: only NaN at the end
    const Tensor x = from_doubles(v, {2, n}, DType::f32);
    Tensor indices;
    const Tensor values = DCAE_KERNEL(gpu(), max_forward, x.to(gpu()), 1, indices);
    const auto got = indices.to_vector<int64_t>();
    EXPECT_EQ(got[0], 3);
    EXPECT_EQ(got[1], n - 1);
    EXPECT_TRUE(std::isnan(values.to_vector<float>()[0]));
  }
}

TEST_F(CudaReduce, MaxBackwardScattersIntoPoisonedZeros) {
  for (DType dtype : kFloatDtypes) {
    const Shape shape = {4, 6, 5};
    const Tensor x = tied_values(shape, 5, dtype);
    for (int64_t dim = 0; dim < 3; ++dim) {
      Tensor indices;
      ops::cpu::max_forward(x, dim, indices);
      Shape kept = shape;
      kept[dim] = 1;
      const Tensor grad = random_tensor(kept, 6, dtype);
      EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), max_backward, grad.to(gpu()), indices.to(gpu()), shape, dim),
                                 ops::cpu::max_backward(grad, indices, shape, dim)))
          << dtype << " dim " << dim;
    }
  }
  const Tensor x = random_tensor({7, 9}, 7, DType::f32);
  EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::max(in[0], 1); }, {x}, {true},
                                       tolerance_for(DType::f32)));
  EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::max(in[0]); }, {x}, {true},
                                       tolerance_for(DType::f32)));
}

}  // namespace
}  // namespace dcae
