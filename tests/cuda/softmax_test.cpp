// Softmax and log-softmax on the GPU against the CPU kernels: the last dim (a warp or a block per row) and middle
// dims (a thread per column), -inf and NaN rows, and gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ops/cpu/softmax.h"
#include "ops/dispatch.h"
#include "ops/softmax.h"
#include "ops/view.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;
using testing::tolerance_for;

class CudaSoftmax : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

TEST_F(CudaSoftmax, ForwardAndBackwardMatchCpuAlongEveryDim) {
  const std::vector<std::pair<Shape, int64_t>> cases = {
      {{5, 33}, 1},     // warp per row
      {{3, 3000}, 1},   // block per row
      {{4, 7, 6}, 1},   // columns
      {{4, 7, 6}, 0},   // outermost dim
      {{9}, 0},         // one row
      {{2, 3, 1}, 2},   // rows of one element
  };
  for (const auto& [shape, dim] : cases) {
    for (DType dtype : kFloatDtypes) {
      for (bool log : {false, true}) {
        const Tensor x = random_tensor(shape, 1, dtype, 3.0);
        const Tensor gy = DCAE_KERNEL(gpu(), softmax_forward, x.to(gpu()), dim, log);
        const Tensor cy = ops::cpu::softmax_forward(x, dim, log);
        EXPECT_TRUE(gpu_matches_cpu(gy, cy)) << shape_str(shape) << " dim " << dim << " " << dtype << " log " << log;
        const Tensor g = random_tensor(shape, 2, dtype);
        EXPECT_TRUE(gpu_matches_cpu(DCAE_KERNEL(gpu(), softmax_backward, g.to(gpu()), cy.to(gpu()), dim, log),
                                    ops::cpu::softmax_backward(g, cy, dim, log)))
            << shape_str(shape) << " backward dim " << dim << " " << dtype << " log " << log;
      }
    }
  }
}

// NaN in the same places on both devices, other values close.
::testing::AssertionResult same_nans_and_close(const Tensor& on_gpu, const Tensor& on_cpu) {
  const std::vector<double> a = on_gpu.to_vector<double>(), b = on_cpu.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i]))
      return ::testing::AssertionFailure() << "element " << i << ": GPU " << a[i] << ", CPU " << b[i];
    if (!std::isnan(b[i]) && std::abs(a[i] - b[i]) > 1e-6 + 1e-5 * std::abs(b[i]))
      return ::testing::AssertionFailure() << "element " << i << ": GPU " << a[i] << ", CPU " << b[i];
  }
  return ::testing::AssertionSuccess();
}

TEST_F(CudaSoftmax, InfinitiesAndNanBehaveAsOnTheCpu) {
  const double inf = std::numeric_limits<double>::infinity();
  // Row 0: leading -inf then numbers; row 1: all -inf (NaN row); row 2: a NaN (NaN row); row 3: plain.
  std::vector<double> v = random_tensor({4, 40}, 3).to_vector<double>();
  v[0] = -inf;
  v[1] = -inf;
  v[7] = -inf;
  for (int j = 0; j < 40; ++j) v[40 + j] = -inf;
  v[80 + 13] = std::nan("");
  const Tensor rows = from_doubles(v, {4, 40}, DType::f32);
  const Tensor columns = rows.transpose(0, 1).contiguous();  // [40, 4] along dim 0: the column kernel
  for (bool log : {false, true}) {
    EXPECT_TRUE(same_nans_and_close(DCAE_KERNEL(gpu(), softmax_forward, rows.to(gpu()), 1, log),
                                    ops::cpu::softmax_forward(rows, 1, log)))
        << "rows, log " << log;
    EXPECT_TRUE(same_nans_and_close(DCAE_KERNEL(gpu(), softmax_forward, columns.to(gpu()), 0, log),
                                    ops::cpu::softmax_forward(columns, 0, log)))
        << "columns, log " << log;
  }
}

TEST_F(CudaSoftmax, GradientsThroughAutogradAndStridedInputs) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = random_tensor({3, 5, 17}, 4, dtype);
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::softmax(in[0], -1); }, {x}, {true},
                                         tolerance_for(dtype)));
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::log_softmax(ops::transpose(in[0], 0, 2), 1); },
                                         {x}, {true}, tolerance_for(dtype)));
  }
  EXPECT_EQ(ops::softmax(zeros({0, 4}, DType::f32, gpu()), 1).numel(), 0);
  testing::expect_error([] { ops::softmax(zeros({2, 3}, DType::i64, gpu()), 1); }, {"softmax", "i64"});
}

}  // namespace
}  // namespace dcae
